"""Sweep speed-up: the same points on a Dask LocalCluster with 2 workers vs 1.

``python -m bench.bench_sweep [--points 4] [--frames 64-71]`` (part of ``flexcosim bench``;
fewer frames with ``--quick``). The points are the SimBench example scenario
(``scenarios/simbench.toml``, one winter workday, ``--frames``) at seeds 1..N. Each cluster
is started and its workers warmed up (one frame at seed 0 on every worker: imports, numba
compilation, grid, load and PV years, which each worker process caches) before the clock
starts, so the ratio measures the points, not the start-up; the sweeps run in the order 1, 2, 2, 1
workers (1, 2 with ``--quick``). Writes results/benchmarks/sweep.json.
Target (issue 16): 2 workers >= 1.7x faster than 1 on the 2-core machine; the ratio falls
when other processes share the cores (the JSON has the load average before and after, and
``points_running_at_once``: the sum of the points' wall times over the sweep's, about the
number of workers when the executor keeps them all busy).

``--idle SECONDS``: Dask's own CPU while two workers each run a task that only sleeps, with
the executor's settings and with Dask's defaults (results/benchmarks/sweep_idle.json).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from flexcore.runs import limit_blas_threads

limit_blas_threads()

SCENARIO = "scenarios/simbench.toml"


def _warm_up(doc: dict, base: str) -> str:
    """What a worker process does once and caches (imports, numba compilation of the power
    flow, the grid, the load and PV years): one frame of the base scenario at seed 0."""
    from scenarios.sweep import run_point

    doc = {**doc, "scenario": {**doc["scenario"], "seed": 0, "slots": "72"}}
    with tempfile.TemporaryDirectory(prefix="warm-") as tmp:
        result = run_point(doc, base, str(Path(tmp) / "run"))
    return f"{result['status']} {result['error']}".strip()


def _sweep_file(folder: Path, *, points: int, frames: str) -> Path:
    import tomllib

    from flexcore.runs import write_toml

    doc = tomllib.loads(Path(SCENARIO).read_text())
    doc["scenario"] |= {"day_types": ["winter_workday"], "slots": frames}
    doc.setdefault("results", {})["plots"] = False
    base = write_toml(folder / "base.toml", doc)
    return write_toml(folder / "sweep.toml", {
        "sweep": {"name": "bench", "base": str(base), "mode": "product"},
        "vary": {"scenario.seed": list(range(1, points + 1))}})


def bench(*, points: int = 4, frames: str = "64-71", order: tuple[int, ...] = (1, 2, 2, 1)
          ) -> dict:
    """Time the sweep on a 1-worker and a 2-worker LocalCluster (both started and warmed
    up first), in ``order`` (default 1, 2, 2, 1: a drift of the machine's load and the
    per-process caches of the first sweep count equally for both)."""
    from flexcore.runs import versions
    from scenarios.sweep import _local_cluster, load_sweep, run_sweep

    out: dict = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                 "machine": versions()["platform"], "scenario": SCENARIO, "points": points,
                 "frames_per_point": frames, "order": list(order)}
    clusters = {}
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = tmp_dir.name
    sweep = load_sweep(_sweep_file(Path(tmp), points=points, frames=frames))
    walls: dict[int, list[float]] = {1: [], 2: []}
    busy: dict[int, list[float]] = {1: [], 2: []}  # sum of the points' wall times / sweep's
    out["load_average_1min_before"] = os.getloadavg()[0]
    try:
        for workers in sorted(set(order)):
            clusters[workers] = _local_cluster(workers)
            client = clusters[workers][0]
            # a task on each worker (Client.run would call it in the worker's event loop,
            # where mosaik cannot start its own)
            warm = client.gather([client.submit(_warm_up, sweep.points[0].doc, str(sweep.base),
                                                workers=[w], pure=False)
                                  for w in client.scheduler_info()["workers"]])
            if set(warm) != {"done"}:
                raise RuntimeError(f"warm-up failed: {warm}")
        for k, workers in enumerate(order):
            t0 = time.perf_counter()
            records = run_sweep(sweep, sweep_dir=Path(tmp) / f"{k}-w{workers}",
                                client=clusters[workers][0])
            walls[workers].append(time.perf_counter() - t0)
            busy[workers].append(sum(r["point_wall_s"] for r in records) / walls[workers][-1])
            if any(r["status"] != "done" for r in records):
                raise RuntimeError(f"a point failed: {records}")
    finally:
        for client, cluster in clusters.values():
            client.close()
            cluster.close()
        tmp_dir.cleanup()
    out["load_average_1min_after"] = os.getloadavg()[0]
    for workers, w in walls.items():
        out[f"wall_s_{workers}_workers"] = w
        out[f"points_running_at_once_{workers}_workers"] = busy[workers]
    out["speedup_2_vs_1"] = sum(walls[1]) / sum(walls[2])
    out["cpu_count"] = os.cpu_count()
    path = Path("results/benchmarks/sweep.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def idle(*, seconds: float = 30.0, workers: int = 2) -> dict:
    """Dask's own CPU: the process tree's CPU time (client with scheduler and nannies,
    workers) while every worker runs a task that only sleeps, on a LocalCluster with the
    executor's settings (``scenarios.sweep.WORKER_CONFIG``) and with Dask's defaults, side
    by side. Writes results/benchmarks/sweep_idle.json."""
    import psutil

    from scenarios.sweep import WORKER_CONFIG, _local_cluster

    def tree_cpu_s() -> float:
        total = 0.0
        for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
        return total

    out: dict = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                 "workers": workers, "seconds": seconds,
                 "load_average_1min_before": os.getloadavg()[0]}
    for label, config in (("dask_defaults", {}), ("executor", WORKER_CONFIG),
                          ("dask_defaults_again", {}), ("executor_again", WORKER_CONFIG)):
        client, cluster = _local_cluster(workers, config=config)
        try:
            client.gather([client.submit(_nap, 0.1, pure=False) for _ in range(workers)])
            c0, t0 = tree_cpu_s(), time.perf_counter()
            client.gather([client.submit(_nap, seconds, pure=False) for _ in range(workers)])
            cpu, wall = tree_cpu_s() - c0, time.perf_counter() - t0
        finally:
            client.close()
            cluster.close()
        out[label] = {"cpu_s": cpu, "wall_s": wall, "share_of_a_core": cpu / wall}
    out["load_average_1min_after"] = os.getloadavg()[0]
    path = Path("results/benchmarks/sweep_idle.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None, *, quick: bool = False) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--frames", default="68-71" if quick else "64-71")
    ap.add_argument("--idle", type=float, metavar="SECONDS", default=None,
                    help="only Dask's own CPU while 2 workers sleep SECONDS (executor's "
                         "settings vs Dask's defaults)")
    args = ap.parse_args(argv)
    if args.idle is not None:
        print("== sweep executor idle (written to results/benchmarks/sweep_idle.json)")
        print(json.dumps(idle(seconds=args.idle), indent=1))
        return 0
    out = bench(points=args.points, frames=args.frames, order=(1, 2) if quick else (1, 2, 2, 1))
    print("== sweep (written to results/benchmarks/sweep.json)")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
