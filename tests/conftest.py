"""Test-wide setup: the same single-threaded BLAS as ``flexcosim`` (see scenarios.cli)."""
from flexcore.runs import limit_blas_threads

limit_blas_threads()
