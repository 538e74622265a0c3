"""Test-wide setup: the same single-threaded BLAS as ``flexcosim`` (see flexcore.cli)."""
from flexcore.cli import limit_blas_threads

limit_blas_threads()
