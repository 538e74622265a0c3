"""Benchmark: the LP warm start of refinement rounds and new frames, old against new.

``python -m bench.bench_region_lpwarm --load FILE [--calls START:STOP] [--out PATH]``
replays recorded :func:`flexcore.market.multi.clear_region` calls of a region co-simulation
(FILE: the pickled list written by ``python -m bench.bench_region_replay --save FILE``, each
element ``pickle.dumps((args, kwargs))`` of one call) as two chains side by side, call by
call in one process: **old** (:data:`flexcore.market.multi.ROUND_WARM_START` off: the
statuses merged over the last two LP relaxations, new columns at their lower bound or upper
box row, as before) and **new** (on: a block full in the last LP relaxation takes its
statuses from that LP only, new columns start at 0 on the side their reduced costs press
them to). Each chain passes ``warm=`` its own previous result, as the TSO agent does.

Printed and written to ``results/benchmarks/region_lpwarm-<UTC>.json`` and ``.png``: per
call the points the packages have (``points_m``), the LP relaxations' simplex iterations and
HiGHS time of each chain, their first LP relaxation's iterations (the round's LP), the LP
relaxations warm-started and rejected, the CPU time of each call, and the relative cost
difference (the optima must agree: the basis is only where the simplex starts); totals and
the ratios old / new. The figure shows iterations and LP time per call, old and new.
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
from flexcore.market.multi import RegionClearing
from flexcore.runs import write_json

OUT_DIR = Path("results/benchmarks")


class _FirstLp:
    """Counts the simplex iterations of each call's first LP relaxation (wraps the module's
    ``solve_highs``: the LP relaxations are the calls given ``want_basis``)."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.original = multi.solve_highs

    def __call__(self, lp: Any, **kw: Any) -> Any:
        out = self.original(lp, **kw)
        if kw.get("want_basis") and self.first is None:
            self.first = out.iterations
        return out


def _one(blob: bytes, prev: RegionClearing | None, place: bool, first: _FirstLp
         ) -> tuple[RegionClearing, float, int]:
    args, kwargs = pickle.loads(blob)
    kwargs["warm"] = prev
    multi.ROUND_WARM_START = place
    first.first = None
    c0 = time.process_time()
    try:
        r = multi.clear_region(*args, **kwargs)
    finally:
        multi.ROUND_WARM_START = True
    return r, time.process_time() - c0, first.first or 0


def _rel(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b) / max(abs(b), 1e-12)


def replay(calls: list[bytes]) -> list[dict[str, Any]]:
    """Both chains, call by call (old first, then new)."""
    rows = []
    prev_old: RegionClearing | None = None
    prev_new: RegionClearing | None = None
    first = _FirstLp()
    multi.solve_highs = first      # type: ignore[assignment]
    try:
        for k, blob in enumerate(calls):
            args, _ = pickle.loads(blob)
            ms = sorted({a.package.m for a in args[0]})
            old, cpu_o, first_o = _one(blob, prev_old, False, first)
            new, cpu_n, first_n = _one(blob, prev_new, True, first)
            prev_old, prev_new = old, new
            row = {
                "call": k, "points_m": ms, "status_old": old.status.value,
                "status_new": new.status.value, "cost_old_eur_per_h": old.cost_eur_per_h,
                "cost_new_eur_per_h": new.cost_eur_per_h,
                "cost_rel_diff": _rel(new.cost_eur_per_h, old.cost_eur_per_h),
                "same_points": new.points == old.points and new.mv_point == old.mv_point,
                "rows": new.rows, "columns": new.columns, "full_areas": new.full_areas,
                "rounds_old": old.lazy_rounds, "rounds_new": new.lazy_rounds,
                "lp_iterations_old": old.lp_iterations, "lp_iterations_new": new.lp_iterations,
                "first_lp_iterations_old": first_o, "first_lp_iterations_new": first_n,
                "lp_time_old_s": old.lp_time_s, "lp_time_new_s": new.lp_time_s,
                "cpu_old_s": cpu_o, "cpu_new_s": cpu_n,
                "lp_warm_started_old": old.lp_warm_started,
                "lp_warm_started_new": new.lp_warm_started,
                "lp_warm_rejected_old": old.lp_warm_rejected,
                "lp_warm_rejected_new": new.lp_warm_rejected,
            }
            rows.append(row)
            print(f"{k:3d} m={ms}: {new.rows}x{new.columns}, LP iterations "
                  f"{old.lp_iterations:6d} / {new.lp_iterations:6d} (first LP {first_o} / "
                  f"{first_n}), LP {old.lp_time_s:5.2f} / {new.lp_time_s:5.2f} s, CPU "
                  f"{cpu_o:5.2f} / {cpu_n:5.2f} s, rejected {old.lp_warm_rejected}/"
                  f"{new.lp_warm_rejected}, cost diff {row['cost_rel_diff']:.1e}"
                  f"{'' if row['same_points'] else ', OTHER POINTS'}", flush=True)
    finally:
        multi.solve_highs = first.original    # type: ignore[assignment]
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, unit in (("lp_iterations", ""), ("first_lp_iterations", ""),
                      ("lp_time", "_s"), ("cpu", "_s")):
        o = float(sum(r[f"{key}_old{unit}"] for r in rows))
        n = float(sum(r[f"{key}_new{unit}"] for r in rows))
        out[f"{key}_old{unit}"], out[f"{key}_new{unit}"] = o, n
        out[f"{key}_ratio_old_over_new"] = o / n if n else math.nan
    out["max_cost_rel_diff"] = max((r["cost_rel_diff"] for r in rows), default=0.0)
    out["all_same_points"] = all(r["same_points"] for r in rows)
    out["all_same_status"] = all(r["status_old"] == r["status_new"] for r in rows)
    return out


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, label in ((axes[0], "lp_iterations", "simplex iterations"),
                           (axes[1], "lp_time", "HiGHS LP time [s]")):
        unit = "" if key == "lp_iterations" else "_s"
        ax.bar(k - 0.2, [r[f"{key}_old{unit}"] for r in rows], 0.4, label="old")
        ax.bar(k + 0.2, [r[f"{key}_new{unit}"] for r in rows], 0.4, label="new")
        ax.set_xticks(k, [f"{r['call']}\nm{max(r['points_m'])}" for r in rows], fontsize=7)
        ax.set_xlabel("clearing (m = most points of a package)")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("LP relaxations per clearing, warm chains: old vs new start "
                 "(costs equal)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--load", required=True, help="recorded clear_region calls (pickle)")
    p.add_argument("--calls", default=None, help="a slice START:STOP of the calls")
    p.add_argument("--out", default=None, help="JSON path (the figure next to it, .png)")
    a = p.parse_args(argv)
    calls: list[bytes] = pickle.loads(Path(a.load).read_bytes())
    if a.calls:
        start, _, stop = a.calls.partition(":")
        calls = calls[int(start or 0):int(stop) if stop else None]
    load0 = os.getloadavg()[0]
    rows = replay(calls)
    tot = totals(rows)
    print(f"{len(rows)} clearings: LP iterations old {tot['lp_iterations_old']:.0f}, new "
          f"{tot['lp_iterations_new']:.0f} (x{tot['lp_iterations_ratio_old_over_new']:.2f}); "
          f"LP time {tot['lp_time_old_s']:.1f} / {tot['lp_time_new_s']:.1f} s "
          f"(x{tot['lp_time_ratio_old_over_new']:.2f}); CPU {tot['cpu_old_s']:.1f} / "
          f"{tot['cpu_new_s']:.1f} s; largest cost difference {tot['max_cost_rel_diff']:.1e}; "
          f"same points: {tot['all_same_points']}", flush=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = Path(a.out or OUT_DIR / f"region_lpwarm-{stamp}.json")
    out = {"loaded_from": a.load, "calls": a.calls, "load_avg_before": load0,
           "load_avg_after": os.getloadavg()[0], "totals": tot, "clearings": rows,
           "note": "old and new chains replayed alternately, call by call, in one process "
                   "(2 shared cores); cpu = time.process_time of the call"}
    write_json(str(path), out)
    figure(rows, path.with_suffix(".png"))
    print(f"written {path} and {path.with_suffix('.png')}")
    return out


if __name__ == "__main__":
    main()
