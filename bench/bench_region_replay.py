"""Benchmark: the TSO's clearings of a real region co-simulation, replayed cold and warm.

``python -m bench.bench_region_replay [--grid ...] [--frames 3] [--start 72] [--day-type
winter_workday] [--areas 0] [--processes 2] [--save FILE | --load FILE]`` runs
:func:`scenarios.region_cosim.run_region_cosim` (the bids, profiles and split of
:func:`bench.bench_region_cosim.load_region`; areas 0 = all) and records every call of
:func:`flexcore.market.multi.clear_region` the TSO makes (its arguments, pickled at the
call), then replays the sequence in this process twice side by side, call by call: **cold**
(``lp_warm_start=False``: every LP relaxation solved from scratch, as before) and **warm**
(each call given the previous warm replay's result, ``warm=``, as the TSO agent does; its
lazy rounds warm-start from each other). ``warm_full`` is passed as the TSO passed it,
in both. ``--save`` also writes the recorded calls to FILE (pickle, a development aid),
``--load`` replays such a file instead of running the co-simulation.

Printed and written to ``results/benchmarks/region_replay-<UTC>.json``: per clearing the
CPU time of this process (``time.process_time``) and the wall time of each replay, the LP
relaxations' simplex iterations and time, the lazy rounds, and the differences of the
warm result from the cold one (relative cost difference, same points, same full areas);
totals and the ratio cold / warm of CPU time, LP time and iterations.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import time
from pathlib import Path
from typing import Any

import flexcore.market.multi as multi
from bench.bench_region_cosim import add_region_args, load_region
from flexcore.market.multi import RegionClearing
from flexcore.runs import write_json

OUT_DIR = Path("results/benchmarks")


def capture(a: argparse.Namespace) -> list[bytes]:
    """Run the co-simulation of ``a`` and return the TSO's clear_region calls, each the
    pickle of ``(args, kwargs)`` taken at the call (the TSO agent imports ``clear_region``
    from the module when it clears, so replacing the module's attribute catches it)."""
    from dataclasses import replace

    from scenarios.region_cosim import CosimOptions, run_region_cosim

    region, _, cfg0, bids_all, inj = load_region(a)
    names = [x.name for x in region.areas][:a.areas or None]
    bids = {x: bids_all[x] for x in names if x in bids_all}
    calls: list[bytes] = []
    original = multi.clear_region

    def recording(*args: Any, **kwargs: Any) -> RegionClearing:
        calls.append(pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL))
        return original(*args, **kwargs)

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    multi.clear_region = recording      # type: ignore[assignment]
    try:
        res = run_region_cosim(replace(cfg0, areas=a.areas),
                               CosimOptions(frames=a.frames, processes=a.processes),
                               out=Path("results") / f"{stamp}-bench-region-replay",
                               region=region, bids=bids, injections=inj)
    finally:
        multi.clear_region = original   # type: ignore[assignment]
    print(f"co-simulation: {len(bids)} areas, {a.frames} frames, {len(calls)} clearings; "
          f"costs {[round(float(f['cost_eur_per_h']), 3) for f in res.frames]}", flush=True)
    return calls


def _one(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[RegionClearing, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    r = multi.clear_region(*args, **kwargs)
    return r, time.process_time() - c0, time.perf_counter() - w0


def _rel(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b) / max(abs(b), 1e-12)


def replay(calls: list[bytes]) -> list[dict[str, Any]]:
    """Each call cold, then warm (from the previous warm result), side by side."""
    rows = []
    prev: RegionClearing | None = None
    for k, blob in enumerate(calls):
        args, kwargs = pickle.loads(blob)
        kwargs.pop("warm", None)
        kwargs["lp_warm_start"] = False
        cold, cpu_c, wall_c = _one(args, kwargs)
        args, kwargs = pickle.loads(blob)     # a fresh copy: nothing shared with cold
        kwargs["warm"] = prev
        warm, cpu_w, wall_w = _one(args, kwargs)
        prev = warm
        row = {
            "clearing": k, "request_mw": float(args[1]), "status_cold": cold.status.value,
            "status_warm": warm.status.value, "cost_cold_eur_per_h": cold.cost_eur_per_h,
            "cost_warm_eur_per_h": warm.cost_eur_per_h,
            "cost_rel_diff": _rel(warm.cost_eur_per_h, cold.cost_eur_per_h),
            "same_points": warm.points == cold.points and warm.mv_point == cold.mv_point,
            "same_full_areas": set(warm.full_names) == set(cold.full_names),
            "rounds_cold": cold.lazy_rounds, "rounds_warm": warm.lazy_rounds,
            "full_areas": cold.full_areas, "rows": cold.rows, "columns": cold.columns,
            "cpu_cold_s": cpu_c, "cpu_warm_s": cpu_w, "wall_cold_s": wall_c,
            "wall_warm_s": wall_w,
            "lp_time_cold_s": cold.lp_time_s, "lp_time_warm_s": warm.lp_time_s,
            "lp_iterations_cold": cold.lp_iterations, "lp_iterations_warm": warm.lp_iterations,
            "lp_relaxations": warm.lp_relaxations, "lp_warm_started": warm.lp_warm_started,
            "lp_warm_rejected": warm.lp_warm_rejected,
        }
        rows.append(row)
        print(f"{k:3d}: {row['full_areas']:3d} full, rounds {cold.lazy_rounds}/"
              f"{warm.lazy_rounds}, CPU {cpu_c:6.2f} / {cpu_w:6.2f} s, LP "
              f"{cold.lp_time_s:6.2f} / {warm.lp_time_s:6.2f} s, iterations "
              f"{cold.lp_iterations:6d} / {warm.lp_iterations:6d} (warm {warm.lp_warm_started}"
              f"/{warm.lp_relaxations}), cost diff {row['cost_rel_diff']:.1e}"
              f"{'' if row['same_points'] else ', OTHER POINTS'}", flush=True)
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("cpu", "wall", "lp_time", "lp_iterations"):
        unit = "" if key == "lp_iterations" else "_s"
        c = float(sum(r[f"{key}_cold{unit}"] for r in rows))
        w = float(sum(r[f"{key}_warm{unit}"] for r in rows))
        out[f"{key}_cold{unit}"], out[f"{key}_warm{unit}"] = c, w
        out[f"{key}_ratio_cold_over_warm"] = c / w if w else math.nan
    out["max_cost_rel_diff"] = max((r["cost_rel_diff"] for r in rows), default=0.0)
    out["all_same_points"] = all(r["same_points"] for r in rows)
    out["all_same_status"] = all(r["status_cold"] == r["status_warm"] for r in rows)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_region_args(p)
    p.add_argument("--areas", type=int, default=0, help="the first N LV areas (0: all)")
    p.add_argument("--processes", type=int, default=2, help="LV DSO processes")
    p.add_argument("--save", default=None, help="also write the recorded calls (pickle)")
    p.add_argument("--load", default=None, help="replay recorded calls instead of running")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.load:
        calls = pickle.loads(Path(a.load).read_bytes())
    else:
        calls = capture(a)
        if a.save:
            Path(a.save).write_bytes(pickle.dumps(calls))
    load0 = os.getloadavg()[0]
    rows = replay(calls)
    tot = totals(rows)
    print(f"{len(rows)} clearings: CPU cold {tot['cpu_cold_s']:.1f} s, warm "
          f"{tot['cpu_warm_s']:.1f} s (x{tot['cpu_ratio_cold_over_warm']:.2f}); LP relaxations "
          f"{tot['lp_time_cold_s']:.1f} / {tot['lp_time_warm_s']:.1f} s "
          f"(x{tot['lp_time_ratio_cold_over_warm']:.2f}), iterations "
          f"{tot['lp_iterations_cold']:.0f} / {tot['lp_iterations_warm']:.0f}; largest cost "
          f"difference {tot['max_cost_rel_diff']:.1e}; same points: {tot['all_same_points']}",
          flush=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = {"grid": a.grid, "frames": a.frames, "start": a.start, "day_type": a.day_type,
           "areas": a.areas, "processes": a.processes, "mip_rel_gap": a.mip_rel_gap,
           "loaded_from": a.load, "load_avg_before": load0,
           "load_avg_after": os.getloadavg()[0], "totals": tot, "clearings": rows,
           "note": "cold and warm replayed alternately in one process (2 shared cores); "
                   "cpu = time.process_time of this process"}
    path = a.out or str(OUT_DIR / f"region_replay-{stamp}.json")
    write_json(path, out)
    print(f"written {path}")
    return out


if __name__ == "__main__":
    main()
