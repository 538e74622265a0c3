"""Benchmark: the region co-simulation (scenarios.region_cosim) with K = 1, 2, 4 LV DSO
processes, side by side on the same split region, bids and frames.

``python -m bench.bench_region_cosim [--grid simbench:1-MVLV-semiurb-all-0-sw] [--areas N]
[--frames F] [--max-rounds R] [--processes 1 2 4]`` writes
``results/benchmarks/region_cosim.json``: per K the wall time of the run, seconds per
frame, the setup (area files, keys) and per frame the status, cost, rounds, clearing and
signature-check times; plus the split time. The costs of the K runs must agree (the same
clearing whatever the process layout).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from flexcore.grid.grids import load_grid
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region
from flexcore.runs import write_json
from scenarios.region import RegionConfig
from scenarios.region_cosim import CosimOptions, run_region_cosim

OUT = Path("results/benchmarks/region_cosim.json")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="simbench:1-MVLV-semiurb-all-0-sw")
    p.add_argument("--areas", type=int, default=0, help="first N LV areas (0: all)")
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--max-rounds", type=int, default=1)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--mip-rel-gap", type=float, default=1e-3)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--oracle", action="store_true",
                   help="also run the in-process study (run_region) on frame 0's loads")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    region = split_region(load_grid(a.grid, allow_mvlv=True), source=a.grid)
    t_split = time.perf_counter() - t0
    cfg = replace(RegionConfig(), grid=a.grid, areas=a.areas, max_rounds=a.max_rounds,
                  mip_rel_gap=a.mip_rel_gap)
    names = [x.name for x in region.areas][:a.areas or None]
    bids = region_bids(region, seed=cfg.seed, share=cfg.bid_share, areas=names)
    runs = []
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for k in a.processes:
        t1 = time.perf_counter()
        res = run_region_cosim(cfg, CosimOptions(frames=a.frames, processes=k),
                               out=Path("results") / f"{stamp}-bench-region-cosim-k{k}",
                               region=region, bids=bids)
        wall = time.perf_counter() - t1
        runs.append({"processes": k, "wall_s": wall, "run_s": res.times_s["run"],
                     "setup_s": res.times_s["setup"],
                     "s_per_frame": res.times_s["run"] / a.frames,
                     "frames": [{key: r[key] for key in (
                         "frame", "status", "cost_eur_per_h", "rounds", "ac_violations",
                         "max_vm_err_pu", "packages_verified", "verify_time_s",
                         "clearing_time_s")} for r in res.frames]})
        print(f"K={k}: {runs[-1]['s_per_frame']:.1f} s per frame (run {res.times_s['run']:.1f} s,"
              f" setup {res.times_s['setup']:.1f} s); costs "
              f"{[round(r['cost_eur_per_h'], 3) for r in res.frames]}", flush=True)
    oracle = None
    if a.oracle:
        t2 = time.perf_counter()
        total = float(sum(b.volume_mw.sum() for b in bids.values()))
        rep = run_region(setup_region(region, bids), cfg.request_share * total,
                         max_rounds=cfg.max_rounds, mip_rel_gap=cfg.mip_rel_gap,
                         time_limit_s=cfg.time_limit_s)
        oracle = {"status": rep.status, "cost_eur_per_h": rep.cost_eur_per_h,
                  "rounds": rep.rounds, "wall_s": time.perf_counter() - t2,
                  "cost_rel_diff": [abs(r["frames"][0]["cost_eur_per_h"] - rep.cost_eur_per_h)
                                    / rep.cost_eur_per_h for r in runs]}
        print(f"run_region: {rep.status}, {rep.cost_eur_per_h:.6f} EUR/h, rounds {rep.rounds}, "
              f"{oracle['wall_s']:.1f} s; relative cost differences {oracle['cost_rel_diff']}")
    out = {"grid": a.grid, "lv_areas": len(names), "frames": a.frames,
           "max_rounds": a.max_rounds, "mip_rel_gap": a.mip_rel_gap, "split_s": t_split,
           "runs": runs, "run_region": oracle,
           "note": "2 shared cores; ratios between K measured side by side in one run"}
    write_json(a.out, out)
    print(f"written {a.out}")
    return out


if __name__ == "__main__":
    main()
