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
  extrapolated from both, the CPU time of the process tree (user and system apart, and its
  minor page faults: ``getrusage`` of the finished children), the peak RSS of the whole
  process tree (the runner and its simulator processes, the sum of their ``VmRSS`` sampled
  every 0.25 s), and the size on disk of the run folder (and of ``timeseries/``),
  extrapolated to a year.

Writes ``results/benchmarks/calendar.json`` and prints it. On a machine shared with other
work the times are noisy; the CPU time is the steadier figure.

``--chunks K`` (default span: two weeks, 2025-01-06..2025-01-20): the same span side by
side as one run and as K chunks (``flexcosim run --chunks K``, ``--warmup-days W``), one
after the other, each in a fresh process: wall, CPU of the process tree, frames/s, peak RSS
and the year extrapolated for both (a chunked year: its start-up and merge once, then
35,040 / K frames plus each chunk's warm-up at the measured time per frame), the speed-up,
and how far the chunked results are from the sequential ones (per frame: the largest cost
and delivered-power difference, the frames whose status, cost or delivery differ; the
totals; the unit states). Writes ``results/benchmarks/calendar_chunks.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

YEAR_FRAMES = 35_040
OUT = Path("results") / "benchmarks" / "calendar.json"
OUT_CHUNKS = Path("results") / "benchmarks" / "calendar_chunks.json"
CHUNKS_SPAN = "2025-01-06..2025-01-20"
#: a frame "differs" when its cost rate or delivered power moves by more than this
DIFF_TOL = 1e-9


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


def run(scenario: str, span: str, *, plots: bool, chunks: int = 1, warmup_days: int = 2,
        keep: Path | None = None) -> dict:
    """One calendar run in a fresh process (``chunks`` > 1: in chunks, in parallel
    processes), its tree's RSS sampled while it runs; ``keep``: a folder to keep the run
    folder in (else a temporary one)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = (keep or Path(tmp)) / (f"run-{chunks}-chunks" if chunks > 1 else "run")
        cmd = [sys.executable, "-m", "bench.bench_calendar", "--scenario", scenario,
               "--span", span, "--one-run", str(out), "--chunks", str(chunks),
               "--warmup-days", str(warmup_days)] + (["--plots"] if plots else [])
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        load0 = os.getloadavg()[0]
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
        load1 = os.getloadavg()[0]
        if proc.returncode != 0:
            raise RuntimeError(f"calendar run failed ({proc.returncode}): {err[-2000:]}")
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        user, system = ru.ru_utime - ru0.ru_utime, ru.ru_stime - ru0.ru_stime
        cpu = user + system
        faults = ru.ru_minflt - ru0.ru_minflt
        summary = json.loads((out / "summary.json").read_text())
        n = int(summary["frames"]) + int(summary.get("warmup_frames", 0))
        wall = float(summary["wall_time_s"])
        import pandas as pd

        per_frame = pd.read_parquet(out / "timeseries" / "frames.parquet",
                                    columns=["wall_time_s"])["wall_time_s"].to_numpy(float)
        size, ts = _folder_bytes(out), _folder_bytes(out / "timeseries")
        files = {str(p.relative_to(out)): p.stat().st_size
                 for p in sorted(out.rglob("*")) if p.is_file()}
    year = YEAR_FRAMES / int(summary["frames"])
    # frame 0's wall_time_s holds the start-up; the others are one frame each (in a chunked
    # run: the frames of K processes at once, each chunk's longest run the wall)
    layout = summary.get("chunk_layout") or [{"frames": len(per_frame), "warmup_frames": 0}]
    longest = max(c["frames"] + c["warmup_frames"] for c in layout)
    steady_s = float(per_frame[1:].sum()) / max(len(per_frame) - 1, 1)
    fixed_s = wall - steady_s * longest
    warm = max(c["warmup_frames"] for c in layout)   # a year's chunk: the same W days
    year_frames = -(-YEAR_FRAMES // len(layout)) + warm
    return {"chunks": len(layout), "frames": int(summary["frames"]), "frames_run": n,
            "wall_s": wall, "process_wall_s": process_s, "process_tree_cpu_s": cpu,
            "process_tree_user_s": user, "process_tree_system_s": system,
            "system_share": system / cpu if cpu else None,
            "process_tree_minor_faults": faults, "minor_faults_per_frame": faults / n,
            "frames_per_s": int(summary["frames"]) / wall, "cpu_ms_per_frame": 1e3 * cpu / n,
            "steady_frames_per_s": 1 / steady_s if steady_s else None,
            "start_up_and_end_s": fixed_s, "merge_s": summary.get("merge_s"),
            "chunk_wall_s": [c.get("wall_s") for c in summary.get("chunk_layout", [])],
            "year_extrapolated_min": wall * year / 60,
            "year_steady_extrapolated_min": (fixed_s + steady_s * year_frames) / 60,
            "year_extrapolated_cpu_min": cpu * YEAR_FRAMES / n / 60,
            "load_average_1min": [load0, load1],
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
    ap.add_argument("--out", default=None, help=f"default {OUT} ({OUT_CHUNKS} with --chunks)")
    ap.add_argument("--chunks", type=int, default=1,
                    help="K > 1: the span as one run and as K chunks, side by side")
    ap.add_argument("--warmup-days", type=int, default=2, help="with --chunks (default 2)")
    ap.add_argument("--keep", metavar="DIR", help="keep the run folders in DIR")
    ap.add_argument("--chunked-only", action="store_true",
                    help="with --chunks: only the chunked run (no sequential run, no difference)")
    ap.add_argument("--one-run", metavar="RUN_DIR", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)
    if args.chunks > 1 and "--span" not in (argv if argv is not None else sys.argv):
        args.span = CHUNKS_SPAN

    import dataclasses

    from flexcore.runs import limit_blas_threads, versions

    limit_blas_threads()
    from scenarios.config import load_config, with_calendar
    from scenarios.runner import run_scenario

    cfg = load_config(args.scenario)
    span_cfg = dataclasses.replace(with_calendar(cfg, args.span), plots=args.plots)
    if args.one_run:
        if args.chunks > 1:
            from scenarios.chunks import run_chunked, with_chunks

            run_chunked(with_chunks(span_cfg, chunks=args.chunks,
                                    warmup_days=args.warmup_days), out=args.one_run)
        else:
            run_scenario(span_cfg, out=args.one_run)
        return 0
    if args.chunks > 1:
        return _side_by_side(args)
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
    _write(res, Path(args.out or OUT), "calendar")
    return 0


def _write(res: dict, path: Path, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"== {what} (written to {path})")
    print(json.dumps(res, indent=1))


def _side_by_side(args) -> int:
    """``--chunks K``: the span as one run, then as K chunks; speed and difference."""
    from flexcore.runs import versions

    with tempfile.TemporaryDirectory() as tmp:
        keep = Path(args.keep or tmp)
        keep.mkdir(parents=True, exist_ok=True)
        one = (None if args.chunked_only
               else run(args.scenario, args.span, plots=args.plots, keep=keep))
        many = run(args.scenario, args.span, plots=args.plots, chunks=args.chunks,
                   warmup_days=args.warmup_days, keep=keep)
        diff = (None if one is None
                else difference(keep / "run", keep / f"run-{args.chunks}-chunks"))
    res = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "machine": versions()["platform"], "scenario": args.scenario, "span": args.span,
           "chunks": args.chunks, "warmup_days": args.warmup_days, "plots": args.plots,
           "sequential": one, "chunked": many,
           "speed_up_wall": one and one["wall_s"] / many["wall_s"],
           "cpu_ratio_chunked_over_sequential": one and many["process_tree_cpu_s"]
           / one["process_tree_cpu_s"],
           "difference": diff,
           "note": "one run after the other, each in a fresh process; year_steady_*: start-up "
                   "and merge once, then the frames of the longest chunk of a year (35,040 / "
                   "K + its warm-up) at the measured time per frame"}
    _write(res, Path(args.out or OUT_CHUNKS), "calendar chunks")
    return 0


def difference(seq: Path, chunked: Path) -> dict:
    """How far the chunked run's results are from the sequential run's, per frame (cost
    rate, delivered power, status) and in total (energy cost, delivered energy), and the
    largest difference of a unit state (SOC, indoor temperature) in the last frame."""
    import numpy as np

    from scenarios.results import read_table

    cols = ["frame", "timestamp", "status", "cost_eur_per_h", "delivered_mw", "request_mw"]
    a, b = read_table(seq, "frames", columns=cols), read_table(chunked, "frames", columns=cols)
    if a["timestamp"].tolist() != b["timestamp"].tolist():
        return {"error": f"frames differ: {len(a)} vs {len(b)} frames"}
    s_seq = json.loads((seq / "summary.json").read_text())
    s_chk = json.loads((chunked / "summary.json").read_text())
    first = min(c["first_frame"] for c in s_chk["chunk_layout"][1:])
    dc = (a["cost_eur_per_h"].fillna(0) - b["cost_eur_per_h"].fillna(0)).abs().to_numpy()
    dd = (a["delivered_mw"].fillna(0) - b["delivered_mw"].fillna(0)).abs().to_numpy()
    differ = (dc > DIFF_TOL) | (dd > DIFF_TOL) | (a["status"] != b["status"]).to_numpy()
    last = int(a["frame"].iloc[-1])
    ua = read_table(seq, "units", frames=[last]).sort_values("unit_id")
    ub = read_table(chunked, "units", frames=[last]).sort_values("unit_id")
    states = {c: float(np.nanmax(np.abs(ua[c].to_numpy(float) - ub[c].to_numpy(float)),
                                 initial=0.0))
              for c in ua.columns if c.startswith("state_")}
    return {"frames": len(a), "frames_before_first_boundary": first,
            "frames_differ": int(differ.sum()),
            "frames_differ_before_first_boundary": int(differ[:first].sum()),
            "max_abs_cost_diff_eur_per_h": float(dc.max(initial=0.0)),
            "max_abs_delivered_diff_mw": float(dd.max(initial=0.0)),
            "status_differ": int((a["status"] != b["status"]).sum()),
            "cost_eur": [s_seq["cost_eur"], s_chk["cost_eur"]],
            "delivered_up_mwh": [s_seq["delivered_up_mwh"], s_chk["delivered_up_mwh"]],
            "delivered_down_mwh": [s_seq["delivered_down_mwh"], s_chk["delivered_down_mwh"]],
            "max_abs_state_diff_last_frame": states,
            "tolerance": DIFF_TOL}


if __name__ == "__main__":
    raise SystemExit(main())
