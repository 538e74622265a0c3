"""Benchmark: the region co-simulation at ``privacy = "exact"`` (format 2, rows published
lazily, DSO-to-DSO slack changes and links) against ``"full"`` (format 1), side by side on
the same split region, bids and frames.

``python -m bench.bench_region_cosim_privacy [--grid simbench:1-MVLV-semiurb-all-0-sw]
[--areas 10 30] [--processes 2] [--frames 3] [--start 72] [--day-type winter_workday]``
runs, for each N of ``--areas`` (the first N LV areas + MV), the co-simulation at "full"
and then at "exact" (one after the other in this process, K LV DSO processes) and writes
``results/benchmarks/region_cosim_privacy-<UTC time>.json``: per run and frame the status,
cost, rounds, clearings (exact: lazy clearings per frame), constraint rows the TSO held at
the end of the frame (``rows_held``), links, errors, wall time and where it went; per N the
largest relative cost difference between the two levels. Wall times on the shared machine
are noisy: compare the two runs of one N (measured right after each other).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from bench.bench_region_cosim import add_region_args, load_region, summarize
from flexcore.runs import write_json
from scenarios.region_cosim import CosimOptions, run_region_cosim

_FRAME_KEYS = ("frame", "status", "cost_eur_per_h", "rounds", "clearings", "rows_held",
               "links", "ac_violations", "max_vm_err_pu", "max_loading_err_percent",
               "packages_verified", "wall_s", "clearing_time_s", "verify_time_s",
               "dso_time_s", "grid_time_s")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_region_args(p)
    p.add_argument("--areas", type=int, nargs="+", default=[10, 30])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out_file = Path(a.out or f"results/benchmarks/region_cosim_privacy-{stamp}.json")
    region, t_split, cfg0, bids_all, inj = load_region(a)
    result: dict = {"grid": a.grid, "frames": a.frames, "start": a.start,
                    "day_type": a.day_type, "processes": a.processes,
                    "max_rounds": a.max_rounds, "mip_rel_gap": a.mip_rel_gap,
                    "split_s": t_split, "runs": [], "cost_rel_diff": {},
                    "note": "2 shared cores; compare the two privacy levels of one N "
                            "(run right after each other); load_avg_* give the load"}
    for n in a.areas:
        names = [x.name for x in region.areas][:n or None]
        bids = {x: bids_all[x] for x in names if x in bids_all}
        costs = {}
        for privacy in ("full", "exact"):
            cfg = replace(cfg0, areas=n, privacy=privacy)
            load0 = os.getloadavg()[0]
            t1 = time.perf_counter()
            res = run_region_cosim(
                cfg, CosimOptions(frames=a.frames, processes=a.processes),
                out=Path("results") / f"{stamp}-bench-region-cosim-{privacy}-n{n}",
                region=region, bids=bids, injections=inj, secret=f"bench-{n}")
            frames = [{k: r[k] for k in _FRAME_KEYS} for r in res.frames]
            run = {"lv_areas": len(bids), "privacy": privacy,
                   "wall_s": time.perf_counter() - t1, "setup_s": res.times_s["setup"],
                   "run_s": res.times_s["run"], "load_avg_before": load0,
                   "load_avg_after": os.getloadavg()[0],
                   **summarize(frames, res.times_s["setup"]), "frames": frames}
            result["runs"].append(run)
            costs[privacy] = [f["cost_eur_per_h"] for f in frames]
            print(f"{len(bids)} areas, {privacy}: run {run['run_s']:.1f} s (frame 0 "
                  f"{run['first_frame_s']:.1f} s, later {run['mean_frame_s']:.1f} s, clearing "
                  f"{sum(f['clearing_time_s'] for f in frames):.1f} s); costs "
                  f"{[round(c, 4) for c in costs[privacy]]}; rounds "
                  f"{[f['rounds'] for f in frames]}; clearings "
                  f"{[f['clearings'] for f in frames]}; rows held "
                  f"{[f['rows_held'] for f in frames]}; links {[f['links'] for f in frames]}; "
                  f"load {load0:.1f}", flush=True)
        result["cost_rel_diff"][str(len(bids))] = max(
            abs(x - y) / abs(x) for x, y in zip(costs["full"], costs["exact"]))
    write_json(out_file, result)
    print(f"written {out_file}; largest relative cost differences {result['cost_rel_diff']}")
    return result


if __name__ == "__main__":
    main()
