"""Calendar runs: throughput, memory and disk of a run on real dates, extrapolated to a year.

``python -m bench.bench_calendar [--span 2025-01-01..2025-02-01] [--scenario FILE] [--plots]``
(default: January 2025, 2,976 frames at 15 minutes; part of ``flexcosim bench``, one day
with ``--quick``). Measured in one run:

- ``start_up``: in this process, what every calendar run pays before its first frame and
  what grows with the span: the frame clock of the span and of the whole year
  (``FrameClock`` from the ``[calendar]`` table, its ``to_dict`` as every simulator gets
  it, and ``FrameClock.of`` that reads it back), and the building profiles of every frame
  (``BuildingProfiles.for_frames``, as BuildingSim computes them at its start).
- ``run``: ``flexcosim run SCENARIO --calendar SPAN --quiet`` (no plots unless ``--plots``)
  in a fresh process: the run's wall time as the run reports it (``summary.json``,
  start-up of the simulators included), frames/s, the steady frames/s (the frames after
  the first, from ``wall_time_s`` of the frames table), the year (35,040 frames)
  extrapolated from both, the CPU time of the process tree, the peak RSS of the whole
  process tree (the runner and its simulator processes, the sum of their ``VmRSS`` sampled
  every 0.25 s), and the size on disk of the run folder (and of ``timeseries/``),
  extrapolated to a year.

Writes ``results/benchmarks/calendar.json`` and prints it. On a machine shared with other
work the times are noisy; the CPU time is the steadier figure.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

YEAR_FRAMES = 35_040
OUT = Path("results") / "benchmarks" / "calendar.json"


def _tree_rss_mb(pid: int) -> float:
    """Sum of the resident set sizes of ``pid`` and its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        p = int(entry.name)
        parents[p] = int(stat.rsplit(")", 1)[1].split()[1])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[p] = int(line.split()[1])
    tree, todo = {pid}, [pid]
    while todo:
        q = todo.pop()
        kids = [c for c, pp in parents.items() if pp == q and c not in tree]
        tree.update(kids)
        todo += kids
    return sum(rss.get(p, 0) for p in tree) / 1024


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def start_up(cfg, span_cfg) -> dict:
    """Clock and profile start-up of the span and of the whole year (this process)."""
    from flexcore.district.clock import FrameClock
    from flexcore.grid.district_grid import building_table
    from simulators import building_profiles

    out = {}
    t0 = time.perf_counter()
    profiles = building_profiles(building_table(cfg.buildings, cfg.grid), seed=cfg.seed,
                                 pv_penetration=cfg.pv_penetration)
    out["profiles_load_s"] = time.perf_counter() - t0
    for label, c in (("span", span_cfg), ("year", _year_cfg(cfg, span_cfg))):
        t0 = time.perf_counter()
        clock = c.clock()
        t_clock = time.perf_counter() - t0
        t0 = time.perf_counter()
        d = clock.to_dict()
        size = len(json.dumps(d))
        FrameClock.of(d)
        t_param = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = profiles.for_frames(clock.frames)
        t_prof = time.perf_counter() - t0
        out[label] = {"frames": len(clock), "clock_s": t_clock, "clock_param_s": t_param,
                      "clock_param_json_bytes": size, "for_frames_s": t_prof,
                      "profile_arrays_mb": (data.load_p_mw.nbytes + data.load_q_mvar.nbytes
                                            + data.pv_p_mw.nbytes) / 2**20}
    return out


def _year_cfg(cfg, span_cfg):
    from scenarios.config import with_calendar

    year = span_cfg.calendar.start[:4]
    return with_calendar(cfg, year)


def run(scenario: str, span: str, *, plots: bool) -> dict:
    """One calendar run in a fresh process, its tree's RSS sampled while it runs."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "bench.bench_calendar", "--scenario", scenario,
               "--span", span, "--one-run", str(out)] + (["--plots"] if plots else [])
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        peak = [0.0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
                except (OSError, ValueError):
                    pass
                done.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, err = proc.communicate()
        done.set()
        sampler.join()
        process_s = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"calendar run failed ({proc.returncode}): {err[-2000:]}")
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru.ru_utime - ru0.ru_utime) + (ru.ru_stime - ru0.ru_stime)
        summary = json.loads((out / "summary.json").read_text())
        n = int(summary["frames"]) + int(summary.get("warmup_frames", 0))
        wall = float(summary["wall_time_s"])
        import pandas as pd

        per_frame = pd.read_parquet(out / "timeseries" / "frames.parquet",
                                    columns=["wall_time_s"])["wall_time_s"].to_numpy(float)
        size, ts = _folder_bytes(out), _folder_bytes(out / "timeseries")
        files = {str(p.relative_to(out)): p.stat().st_size
                 for p in sorted(out.rglob("*")) if p.is_file()}
    year = YEAR_FRAMES / n
    # frame 0's wall_time_s holds the start-up; the others are one frame each
    steady_s = float(per_frame[1:].sum()) / max(len(per_frame) - 1, 1)
    fixed_s = wall - steady_s * (len(per_frame) - 1)
    return {"frames": n, "wall_s": wall, "process_wall_s": process_s, "process_tree_cpu_s": cpu,
            "frames_per_s": n / wall, "cpu_ms_per_frame": 1e3 * cpu / n,
            "steady_frames_per_s": 1 / steady_s if steady_s else None,
            "start_up_and_end_s": fixed_s,
            "year_extrapolated_min": wall * year / 60,
            "year_steady_extrapolated_min": (fixed_s + steady_s * YEAR_FRAMES) / 60,
            "year_extrapolated_cpu_min": cpu * year / 60,
            "peak_rss_tree_mb": peak[0], "run_folder_mb": size / 2**20,
            "timeseries_mb": ts / 2**20, "year_run_folder_extrapolated_gb": size * year / 2**30,
            "largest_files_mb": {k: v / 2**20 for k, v in sorted(
                files.items(), key=lambda kv: -kv[1])[:8]}}


def main(argv: list[str] | None = None, *, quick: bool = False) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="scenarios/bergwald.toml")
    ap.add_argument("--span", default="2025-01-06..2025-01-07" if quick
                    else "2025-01-01..2025-02-01",
                    help="YEAR or START..END as for flexcosim run --calendar")
    ap.add_argument("--plots", action="store_true", help="write the run's plots too")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--one-run", metavar="RUN_DIR", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)

    import dataclasses

    from flexcore.runs import limit_blas_threads, versions

    limit_blas_threads()
    from scenarios.config import load_config, with_calendar
    from scenarios.runner import run_scenario

    cfg = load_config(args.scenario)
    span_cfg = dataclasses.replace(with_calendar(cfg, args.span), plots=args.plots)
    if args.one_run:
        run_scenario(span_cfg, out=args.one_run)
        return 0
    res = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "machine": versions()["platform"], "scenario": args.scenario, "span": args.span,
           "plots": args.plots, "start_up": start_up(cfg, span_cfg),
           "run": run(args.scenario, args.span, plots=args.plots),
           "note": "year_extrapolated_*: the span's run time (its start-up included) scaled "
                   "to 35,040 frames; year_steady_extrapolated_min: the span's start-up and "
                   "end once plus 35,040 frames at the steady time per frame (frames 1.. of "
                   "the run's wall_time_s; a year adds start_up.year - start_up.span and a "
                   "longer Parquet conversion, see recorder.json); peak_rss_tree_mb: runner "
                   "+ simulator processes"}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"== calendar (written to {path})")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
