"""Benchmark the one clearing over many packages (:func:`flexcore.market.multi.clear_region`).

Builds the packages of a real MV+LV region (default SimBench ``1-MVLV-semiurb-all-0-sw``:
110 LV areas + the MV DSO, m = 3 points each, seeded bids as in ``scenarios/mvlv.toml``)
once, then times one clearing (median of ``--repeat``: wall and CPU time of this process,
and the model build / incumbent LPs / HiGHS parts) for the first 10, 30 and all areas,
coupled (with the MV package: N + 1 packages) and uncoupled, at each request share (of the
areas' total bid volume) and each ``--mip-rel-gap``. ``--compare`` adds, side by side, the
eager formulation (``lazy=False``: every area that can bind in full form from the start,
one MILP) at the first gap, once. Writes ``results/benchmarks/region-<UTC time>.json``.

The machine may be shared: CPU time is the steadier figure; wall time counts the waits.

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


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _time(pk, req, mv, repeat: int, **options) -> dict:
    wall, cpu, res = [], [], None
    parts: dict[str, list[float]] = {"build_s": [], "start_s": [], "solve_s": []}
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        res = clear_region(pk, req, mv=mv, **options)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        parts["build_s"].append(res.build_time_s)
        parts["start_s"].append(res.start_time_s)
        parts["solve_s"].append(res.solve_time_s)
    assert res is not None
    return {"status": res.status.value, "message": res.message,
            "cost_eur_per_h": res.cost_eur_per_h, "columns": res.columns, "rows": res.rows,
            "binaries": res.binaries, "full_areas": res.full_areas,
            "lazy_rounds": res.lazy_rounds, "wall_s": statistics.median(wall),
            "cpu_s": statistics.median(cpu),
            **{k: statistics.median(v) for k, v in parts.items()}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="simbench:1-MVLV-semiurb-all-0-sw")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--request-share", type=_floats, default=[0.3, 0.5])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mip-rel-gap", type=_floats, default=[1e-3, 1e-6])
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--compare", action="store_true",
                    help="also time the eager formulation (lazy=False), once")
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
    head = (f"{'share':>5} {'gap':>6} {'areas':>5} {'pkgs':>4} {'coupled':>7} {'form':>5} "
            f"{'wall s':>7} {'cpu s':>6} {'build':>6} {'start':>6} {'HiGHS':>6} "
            f"{'full':>4} {'rnds':>4} {'bins':>4} {'cost EUR/h':>11} status")
    print(head, flush=True)
    for n in sizes:
        lv = setup.lv[:n]
        mv = make_mv_dso(region, lv, salt="mv")
        total = float(sum(d.bids.volume_mw.sum() for d in lv))
        for share in args.request_share:
            for coupled in (False, True):
                pk = area_packages(lv, mv if coupled else None)
                mv_pkg = mv.package if coupled else None
                runs_ = [(gap, "lazy", args.repeat, {}) for gap in args.mip_rel_gap]
                if args.compare:
                    runs_.append((args.mip_rel_gap[0], "eager", 1, {"lazy": False}))
                for gap, form, repeat, extra in runs_:
                    row = {"areas": n, "packages": n + int(coupled), "coupled": coupled,
                           "m": 3, "bids": int(sum(len(d.bids) for d in lv)),
                           "request_share": share, "request_mw": share * total,
                           "mip_rel_gap": gap, "formulation": form,
                           **_time(pk, share * total, mv_pkg, repeat, mip_rel_gap=gap,
                                   time_limit_s=args.time_limit, **extra)}
                    rows.append(row)
                    print(f"{share:>5.2f} {gap:>6.0e} {n:>5} {row['packages']:>4} "
                          f"{coupled!s:>7} {form:>5} {row['wall_s']:>7.3f} "
                          f"{row['cpu_s']:>6.3f} {row['build_s']:>6.3f} "
                          f"{row['start_s']:>6.3f} {row['solve_s']:>6.3f} "
                          f"{row['full_areas']:>4} {row['lazy_rounds']:>4} "
                          f"{row['binaries']:>4} {row['cost_eur_per_h']:>11.4f} "
                          f"{row['status']}", flush=True)
    out = {"grid": args.grid, "seed": args.seed, "request_shares": args.request_share,
           "mip_rel_gaps": args.mip_rel_gap, "time_limit_s": args.time_limit,
           "repeat": args.repeat, "target_s": 2.0, "split_s": t_split,
           "lv_packages_s": setup.times_s["lv_packages"], "rows": rows,
           "versions": runs.versions(),
           "note": "2 shared cores; wall and CPU (process) time, medians of repeat"}
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = runs.write_json(OUT / f"region-{stamp}.json", out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
