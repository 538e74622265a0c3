"""The processes that run sweep points and calendar chunks (``scenarios.sweep.run_tasks``).

Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes glibc map,
zero and unmap every array over 128 kB anew: a chunked Bergwald run spent a quarter of its
CPU in the kernel on page faults (README "Calendar runs"). The oracle here is the kernel's
own count of minor page faults (``getrusage``) while a loop allocates, fills and frees a
1 MiB array 200 times, as a frame does with its temporary arrays: in a plain process the
heap is reused (a handful of faults), with Dask's setting every round faults in all 256 of
its pages. Checked in a worker of the local cluster (its environment too: one BLAS thread),
and ``restore_malloc`` in a process started with Dask's setting (a worker of a
``--scheduler`` cluster).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flexcore.runs import BLAS_THREAD_VARS

ROUNDS, PAGES = 200, 256   # 1 MiB arrays of 4 KiB pages

LOOP = """
import resource, numpy as np
{restore}
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in range({rounds}):
    a = np.empty(131072)
    a.fill(k)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_array_loop() -> int:
    """Minor page faults of the loop, run in this process (a worker's)."""
    import resource

    import numpy as np

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for k in range(ROUNDS):
        a = np.empty(PAGES * 512)
        a.fill(k)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _loop_in_process(env: dict, *, restore: bool) -> int:
    code = LOOP.format(rounds=ROUNDS, restore="from scenarios.sweep import restore_malloc\n"
                       "assert restore_malloc()" if restore else "")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.strip())


def test_a_process_with_dasks_trim_setting_faults_every_round_and_restore_stops_it():
    trim = {"MALLOC_TRIM_THRESHOLD_": "65536"}
    plain = _loop_in_process({}, restore=False) if "MALLOC_TRIM_THRESHOLD_" not in os.environ \
        else None
    dask_like = _loop_in_process(trim, restore=False)
    restored = _loop_in_process(trim, restore=True)
    assert dask_like >= 0.9 * ROUNDS * PAGES          # every round maps its pages anew
    assert restored <= 0.05 * ROUNDS * PAGES          # the heap is reused
    if plain is not None:
        assert plain <= 0.05 * ROUNDS * PAGES


def test_restore_malloc_does_nothing_without_the_variable(monkeypatch):
    from scenarios.sweep import restore_malloc

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert restore_malloc() is False


@pytest.mark.skipif("MALLOC_TRIM_THRESHOLD_" in os.environ,
                    reason="the variable is set here, and the workers inherit it")
def test_local_workers_reuse_the_heap_and_run_one_blas_thread():
    from scenarios.sweep import _local_cluster

    client, cluster = _local_cluster(1)
    try:
        env = client.run(lambda: {v: os.environ.get(v) for v in
                                  ("MALLOC_TRIM_THRESHOLD_", *BLAS_THREAD_VARS)})
        (worker_env,) = env.values()
        faults = client.submit(_faults_of_array_loop, pure=False).result()
    finally:
        client.close()
        cluster.close()
    assert worker_env == {"MALLOC_TRIM_THRESHOLD_": None} | {v: "1" for v in BLAS_THREAD_VARS}
    assert faults <= 0.05 * ROUNDS * PAGES
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ   # the nanny's setting did not leak here
