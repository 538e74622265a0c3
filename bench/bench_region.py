"""Benchmark the one clearing over many packages (:func:`flexcore.market.multi.clear_region`).

Builds the packages of a real MV+LV region (default SimBench ``1-MVLV-semiurb-all-0-sw``:
110 LV areas + the MV DSO, m = 3 points each, seeded bids as in ``scenarios/mvlv.toml``)
once, then times one clearing (build + HiGHS solve, median of ``--repeat``) for the first
10, 30 and all areas, coupled (with the MV package: N + 1 packages) and uncoupled, at the
same request share. Writes ``results/benchmarks/region-<UTC time>.json``.

    python -m bench.bench_region [--grid simbench:1-MVLV-semiurb-all-0-sw] [--repeat 3]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import time
from pathlib import Path

from flexcore import runs
from flexcore.grid.grids import load_grid
from flexcore.market.multi import clear_region
from flexcore.region.dsos import area_packages, make_mv_dso
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, setup_region

OUT = Path("results") / "benchmarks"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="simbench:1-MVLV-semiurb-all-0-sw")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--request-share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mip-rel-gap", type=float, default=1e-3)
    ap.add_argument("--time-limit", type=float, default=120.0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    region = split_region(load_grid(args.grid, allow_mvlv=True), source=args.grid)
    t_split = time.perf_counter() - t0
    bids = region_bids(region, seed=args.seed)
    setup = setup_region(region, bids, coupled=False)
    print(f"{args.grid}: {len(setup.lv)} LV packages, split {t_split:.1f} s, packages "
          f"{setup.times_s['lv_packages']:.1f} s", flush=True)
    sizes = sorted({n for n in (10, 30, len(setup.lv)) if n <= len(setup.lv)})
    rows = []
    for n in sizes:
        lv = setup.lv[:n]
        mv = make_mv_dso(region, lv, salt="mv")
        total = float(sum(d.bids.volume_mw.sum() for d in lv))
        req = args.request_share * total
        for coupled in (False, True):
            pk = area_packages(lv, mv if coupled else None)
            times, build, solve, res = [], [], [], None
            for _ in range(args.repeat):
                t = time.perf_counter()
                res = clear_region(pk, req, mv=mv.package if coupled else None,
                                   mip_rel_gap=args.mip_rel_gap,
                                   time_limit_s=args.time_limit)
                times.append(time.perf_counter() - t)
                build.append(res.build_time_s)
                solve.append(res.solve_time_s)
            assert res is not None
            row = {"areas": n, "packages": n + int(coupled), "coupled": coupled,
                   "m": 3, "bids": int(sum(len(d.bids) for d in lv)),
                   "status": res.status.value, "message": res.message,
                   "cost_eur_per_h": res.cost_eur_per_h,
                   "columns": res.columns, "rows": res.rows, "binaries": res.binaries,
                   "time_s": statistics.median(times), "build_s": statistics.median(build),
                   "solve_s": statistics.median(solve)}
            rows.append(row)
            print(f"areas {n:>4} packages {row['packages']:>4} coupled {coupled!s:>5}: "
                  f"{row['time_s']:.3f} s (build {row['build_s']:.3f}, solve "
                  f"{row['solve_s']:.3f}), {row['columns']} columns, {row['rows']} rows, "
                  f"{row['binaries']} binaries, {row['status']}", flush=True)
    out = {"grid": args.grid, "seed": args.seed, "request_share": args.request_share,
           "mip_rel_gap": args.mip_rel_gap, "time_limit_s": args.time_limit,
           "repeat": args.repeat, "target_s": 2.0, "split_s": t_split,
           "lv_packages_s": setup.times_s["lv_packages"], "rows": rows,
           "versions": runs.versions(), "note": "2 shared cores; timings are noisy"}
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = runs.write_json(OUT / f"region-{stamp}.json", out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
