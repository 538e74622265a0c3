"""Benchmark: the region co-simulation (scenarios.region_cosim): time per frame and for a
day type against the number of LV areas and the number of LV DSO processes K.

``python -m bench.bench_region_cosim [--grid simbench:1-MVLV-semiurb-all-0-sw]
[--runs 10:2 30:1 30:2 30:4 0:2] [--frames F] [--start Q] [--day-type winter_workday]
[--max-rounds R] [--oracle]`` runs each ``N:K`` (the first N LV areas, 0 = all; K LV DSO
processes) on the same split region and bids, frames ``Q .. Q + F - 1`` of SimBench's day
(``--day-type ""``: static loads), one after the other in this process, and writes
``results/benchmarks/region_cosim.json``: per run the setup (area files, keys, processes),
every frame's wall time (frame 0 includes the DSOs' reading of their models and their
first linearisation), its rounds, cost, and where the time went (clearing, signature checks
of the packages, the DSOs' own time summed over DSOs, the region grid's power flows), the
machine's load average, and a day of 96 frames **extrapolated** from them: setup + frame 0
+ 95 x the mean of frames 1 .. F-1 (``day_s_extrapolated``; ``--frames 96 --start 0``
measures the day itself: ``day_s_measured``). Costs of one N with different K must agree
(the same clearing whatever the process layout). Per run also the CPU time of the whole run
(``cpu_runner_s``: this process, i.e. the TSO, the region grid and mosaik;
``cpu_dso_processes_s``: the DSO processes, counted when they exit), the steadier figure on
a shared machine.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from flexcore.grid.grids import load_grid
from flexcore.region.dsos import FrameInjections
from flexcore.region.profiles import region_profiles
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region
from flexcore.runs import write_json
from scenarios.region import RegionConfig
from scenarios.region_cosim import CosimOptions, run_region_cosim

OUT = Path("results/benchmarks/region_cosim.json")
DAY_FRAMES = 96
_FRAME_KEYS = ("frame", "status", "cost_eur_per_h", "rounds", "ac_violations", "max_vm_err_pu",
               "packages_verified", "wall_s", "clearing_time_s", "verify_time_s",
               "dso_time_s", "grid_time_s")


def _cpu_s(usage: resource.struct_rusage) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def _run_spec(text: str) -> tuple[int, int]:
    try:
        n, k = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"run {text!r}: expected AREAS:PROCESSES, e.g. 30:2") from None
    return n, k


def summarize(frames: list[dict], setup_s: float) -> dict:
    """Per-run figures from the frame rows: frame 0, the mean of the later frames, the
    day extrapolated (or measured, with 96 frames)."""
    wall = [float(r["wall_s"]) for r in frames]
    later = wall[1:]
    mean_later = float(np.mean(later)) if later else math.nan
    out = {"first_frame_s": wall[0] if wall else math.nan, "mean_frame_s": mean_later,
           "day_s_extrapolated": setup_s + wall[0] + (DAY_FRAMES - 1) * mean_later
           if wall else math.nan}
    if len(wall) >= DAY_FRAMES:
        out["day_s_measured"] = setup_s + float(sum(wall[:DAY_FRAMES]))
    for key in ("clearing_time_s", "verify_time_s", "dso_time_s", "grid_time_s"):
        vals = [float(r[key]) for r in frames[1:]]
        out[f"mean_{key}"] = float(np.mean(vals)) if vals else math.nan
    out["mean_rounds"] = float(np.mean([r["rounds"] for r in frames])) if frames else math.nan
    return out


def add_region_args(p: argparse.ArgumentParser) -> None:
    """The region and frame options both region co-simulation benches take."""
    p.add_argument("--grid", default="simbench:1-MVLV-semiurb-all-0-sw")
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--start", type=int, default=72, help="first quarter-hour of the day")
    p.add_argument("--day-type", default="winter_workday", help='"" for static loads')
    p.add_argument("--max-rounds", type=int, default=3)
    p.add_argument("--mip-rel-gap", type=float, default=1e-3)


def load_region(a: argparse.Namespace):
    """The split region, the split's time (s), the base config, every area's bids and the
    frames' injections (None: static loads) for the options of :func:`add_region_args`."""
    t0 = time.perf_counter()
    region = split_region(load_grid(a.grid, allow_mvlv=True), source=a.grid)
    t_split = time.perf_counter() - t0
    cfg0 = replace(RegionConfig(), grid=a.grid, max_rounds=a.max_rounds,
                   mip_rel_gap=a.mip_rel_gap)
    bids_all = region_bids(region, seed=cfg0.seed, share=cfg0.bid_share)
    inj = None
    if a.day_type:
        inj = FrameInjections.of(region_profiles(region.net, day_type=a.day_type,
                                                 seed=cfg0.seed, source=a.grid))
        inj = inj.window(a.start, a.frames)
    return region, t_split, cfg0, bids_all, inj


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_region_args(p)
    p.add_argument("--runs", type=_run_spec, nargs="+",
                   default=[(10, 2), (30, 1), (30, 2), (30, 4), (0, 2)],
                   help="AREAS:PROCESSES per run (areas 0: all)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--oracle", action="store_true",
                   help="also run the in-process study (run_region) on the first frame of "
                        "the first run, static loads only")
    a = p.parse_args(argv)
    region, t_split, cfg0, bids_all, inj = load_region(a)
    runs = []
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for n, k in a.runs:
        names = [x.name for x in region.areas][:n or None]
        bids = {x: bids_all[x] for x in names if x in bids_all}
        cfg = replace(cfg0, areas=n)
        load0 = os.getloadavg()[0]
        cpu0 = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
            resource.RUSAGE_CHILDREN))
        t1 = time.perf_counter()
        res = run_region_cosim(cfg, CosimOptions(frames=a.frames, processes=k),
                               out=Path("results") / f"{stamp}-bench-region-cosim-n{n}-k{k}",
                               region=region, bids=bids, injections=inj)
        wall = time.perf_counter() - t1
        cpu = [_cpu_s(resource.getrusage(w)) - _cpu_s(c) for w, c in
               zip((resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN), cpu0)]
        frames = [{key: r[key] for key in _FRAME_KEYS} for r in res.frames]
        run = {"lv_areas": len(bids), "processes": k, "wall_s": wall,
               "cpu_runner_s": cpu[0], "cpu_dso_processes_s": cpu[1],
               "setup_s": res.times_s["setup"], "run_s": res.times_s["run"],
               "load_avg_before": load0, "load_avg_after": os.getloadavg()[0],
               **summarize(frames, res.times_s["setup"]), "frames": frames}
        runs.append(run)
        print(f"{len(bids)} areas, K={k}: setup {run['setup_s']:.1f} s, frame 0 "
              f"{run['first_frame_s']:.1f} s, later frames {run['mean_frame_s']:.1f} s "
              f"(clearing {run['mean_clearing_time_s']:.1f}, signatures "
              f"{run['mean_verify_time_s']:.1f}, DSOs {run['mean_dso_time_s']:.1f} summed, "
              f"grid {run['mean_grid_time_s']:.1f}); day extrapolated "
              f"{run['day_s_extrapolated']:.0f} s; load {load0:.1f}; CPU (whole run) "
              f"runner {cpu[0]:.1f} s, DSO processes {cpu[1]:.1f} s; costs "
              f"{[round(f['cost_eur_per_h'], 3) for f in frames]}", flush=True)
    oracle = None
    if a.oracle and not a.day_type:
        n = a.runs[0][0]
        names = [x.name for x in region.areas][:n or None]
        bids = {x: bids_all[x] for x in names if x in bids_all}
        t2 = time.perf_counter()
        total = float(sum(b.volume_mw.sum() for b in bids.values()))
        rep = run_region(setup_region(region, bids), cfg0.request_share * total,
                         max_rounds=cfg0.max_rounds, mip_rel_gap=cfg0.mip_rel_gap,
                         time_limit_s=cfg0.time_limit_s)
        c0 = runs[0]["frames"][0]["cost_eur_per_h"]
        oracle = {"status": rep.status, "cost_eur_per_h": rep.cost_eur_per_h,
                  "rounds": rep.rounds, "wall_s": time.perf_counter() - t2,
                  "cost_rel_diff": abs(c0 - rep.cost_eur_per_h) / rep.cost_eur_per_h}
        print(f"run_region: {rep.status}, {rep.cost_eur_per_h:.6f} EUR/h, rounds {rep.rounds}, "
              f"{oracle['wall_s']:.1f} s; relative cost difference {oracle['cost_rel_diff']}")
    out = {"grid": a.grid, "frames": a.frames, "start": a.start, "day_type": a.day_type,
           "max_rounds": a.max_rounds, "mip_rel_gap": a.mip_rel_gap, "split_s": t_split,
           "runs": runs, "run_region": oracle,
           "note": "2 shared cores; wall times depend on the other jobs (load_avg_*); "
                   "day_s_extrapolated = setup + frame 0 + 95 x mean of the later frames"}
    write_json(a.out, out)
    print(f"written {a.out}")
    return out


if __name__ == "__main__":
    main()
