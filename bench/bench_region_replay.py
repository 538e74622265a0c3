"""Benchmark: the TSO's clearings of a real region co-simulation, replayed two ways.

``python -m bench.bench_region_replay [--grid ...] [--frames 3] [--start 72] [--day-type
winter_workday] [--areas 0] [--processes 2] [--save FILE | --load FILE] [--compare lp |
incumbent | lpmethod | boxes] [--calls 0:6]`` runs :func:`scenarios.region_cosim.run_region_cosim`
(the bids, profiles and split of :func:`bench.bench_region_cosim.load_region`; areas 0 =
all) and records every call of :func:`flexcore.market.multi.clear_region` the TSO makes (its
arguments, pickled at the call), then replays the sequence in this process twice side by
side, call by call. ``--compare lp`` (default): **cold** (``lp_warm_start=False``: every LP
relaxation solved from scratch, as before) and **warm** (each call given the previous warm
replay's result, ``warm=``, as the TSO agent does; its lazy rounds warm-start from each
other). ``--compare incumbent``: **old** (``incumbent_search=False``: the incumbents of
nearest point, rounding and k-th points, then HiGHS's MILP) and **new** (the branching over
the blocks' points before the MILP, :func:`flexcore.market.multi._branch`), both warm as the
TSO does. ``--compare lpmethod``: **simplex** (``ipm_rows=None``: every LP relaxation by the
simplex from the last basis) and **ipm** (the default rule: a large LP relaxation gets
``WARM_LP_ITERATIONS`` simplex iterations from the basis, else the interior point method
from scratch; :data:`flexcore.market.multi.IPM_ROWS`), both warm as the TSO does.
``--compare boxes``: **all** (``lazy_boxes=False``: every bid-box row in the large LP
relaxations) and **lazy** (the default: only the box rows they need, module doc "Lazy bid
boxes" of :mod:`flexcore.market.multi`), both warm as the TSO does.
``warm_full`` is passed as the TSO passed it, in both. ``--save`` also writes the recorded
calls to FILE (pickle, a development aid), ``--load`` replays such a file instead of running
the co-simulation; ``--calls A:B`` replays calls A..B-1; ``--only SIDE`` replays one side
of ``--compare`` only, printing and writing nothing else (to time two checkouts of the code
against each other with ``farm-bench --vs``).

Printed and written to ``results/benchmarks/region_replay-<UTC>.json`` (another
``--compare``: ``region_replay_<compare>-<UTC>.json`` and a ``.png`` figure:
per call the wall time of both sides and the relative cost difference): per clearing the CPU
time of this process (``time.process_time``) and the wall time of each replay, the LP
relaxations' simplex iterations and time, the lazy rounds, the time of the incumbent LPs and
of the MILP solves, and the differences of the second result from the first (relative cost
difference, same points, same full areas); totals and the ratio first / second of CPU time,
wall time, LP time and iterations.
"""
from __future__ import annotations

import argparse
import json
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


#: per comparison: the two sides' labels and how each side's call is made from the
#: recorded kwargs (``prev``: that side's previous result)
SIDES: dict[str, tuple[tuple[str, str], Any]] = {}


def _lp_side(label: str, kwargs: dict[str, Any], prev: RegionClearing | None) -> None:
    if label == "cold":
        kwargs.pop("warm", None)
        kwargs["lp_warm_start"] = False
    else:
        kwargs["warm"] = prev


def _incumbent_side(label: str, kwargs: dict[str, Any], prev: RegionClearing | None) -> None:
    if prev is not None:
        kwargs["warm"] = prev
    kwargs["incumbent_search"] = label == "new"


def _lpmethod_side(label: str, kwargs: dict[str, Any], prev: RegionClearing | None) -> None:
    if prev is not None:
        kwargs["warm"] = prev
    if label == "simplex":
        kwargs["ipm_rows"] = None


def _boxes_side(label: str, kwargs: dict[str, Any], prev: RegionClearing | None) -> None:
    if prev is not None:
        kwargs["warm"] = prev
    kwargs["lazy_boxes"] = label == "lazy"


SIDES["lp"] = (("cold", "warm"), _lp_side)
SIDES["incumbent"] = (("old", "new"), _incumbent_side)
SIDES["lpmethod"] = (("simplex", "ipm"), _lpmethod_side)
SIDES["boxes"] = (("all", "lazy"), _boxes_side)


def replay(calls: list[bytes], compare: str = "lp", first: int = 0) -> list[dict[str, Any]]:
    """Each call both ways (:data:`SIDES`), side by side; ``first``: the number of the
    first call (for the rows)."""
    (a, b), side = SIDES[compare]
    rows = []
    prev: dict[str, RegionClearing | None] = {a: None, b: None}
    for k, blob in enumerate(calls, start=first):
        res: dict[str, tuple[RegionClearing, float, float]] = {}
        request = 0.0
        for label in (a, b):
            args, kwargs = pickle.loads(blob)   # a fresh copy per side: nothing shared
            side(label, kwargs, prev[label])
            request = float(args[1])
            res[label] = _one(args, kwargs)
            prev[label] = res[label][0]
        ra, rb = res[a][0], res[b][0]
        row: dict[str, Any] = {
            "clearing": k, "request_mw": request,
            "cost_rel_diff": _rel(rb.cost_eur_per_h, ra.cost_eur_per_h),
            "same_points": rb.points == ra.points and rb.mv_point == ra.mv_point,
            "same_full_areas": set(rb.full_names) == set(ra.full_names),
            "full_areas": ra.full_areas, "rows": ra.rows, "columns": ra.columns,
            "lp_relaxations": rb.lp_relaxations, "lp_warm_started": rb.lp_warm_started,
            "lp_warm_rejected": rb.lp_warm_rejected}
        for label in (a, b):
            r, cpu, wall = res[label]
            row |= {f"status_{label}": r.status.value, f"message_{label}": r.message,
                    f"cost_{label}_eur_per_h": r.cost_eur_per_h,
                    f"rounds_{label}": r.lazy_rounds, f"cpu_{label}_s": cpu,
                    f"wall_{label}_s": wall, f"lp_time_{label}_s": r.lp_time_s,
                    f"lp_iterations_{label}": r.lp_iterations,
                    f"start_time_{label}_s": r.start_time_s,
                    f"milp_time_{label}_s": r.solve_time_s - r.lp_time_s}
        rows.append(row)
        print(f"{k:3d}: {row['full_areas']:3d} full, rounds {ra.lazy_rounds}/{rb.lazy_rounds}, "
              f"wall {res[a][2]:6.2f} / {res[b][2]:6.2f} s, LP {ra.lp_time_s:6.2f} / "
              f"{rb.lp_time_s:6.2f} s, incumbent {ra.start_time_s:6.2f} / "
              f"{rb.start_time_s:6.2f} s, MILP {row[f'milp_time_{a}_s']:6.2f} / "
              f"{row[f'milp_time_{b}_s']:6.2f} s, cost {ra.cost_eur_per_h:.4f} / "
              f"{rb.cost_eur_per_h:.4f} (diff {row['cost_rel_diff']:.1e})"
              f"{'' if row['same_points'] else ', other points'}", flush=True)
    return rows


def replay_one(calls: list[bytes], compare: str, label: str, first: int = 0) -> float:
    """The calls one way only (``label``, a side of ``compare``), each from its own previous
    result as :func:`replay` does: per call the wall time and cost printed; returns the
    total wall time. For timing two checkouts of the code against each other (e.g.
    ``farm-bench --vs``), where both sides of :func:`replay` would be the same code."""
    _, side = SIDES[compare]
    prev: RegionClearing | None = None
    total = 0.0
    for k, blob in enumerate(calls, start=first):
        args, kwargs = pickle.loads(blob)
        side(label, kwargs, prev)
        prev, _, wall = _one(args, kwargs)
        total += wall
        print(f"{k:3d}: {prev.status.value}, wall {wall:6.2f} s, LP {prev.lp_time_s:6.2f} s, "
              f"cost {prev.cost_eur_per_h!r}", flush=True)
    print(f"{len(calls)} clearings ({label}): wall {total:.1f} s", flush=True)
    return total


def totals(rows: list[dict[str, Any]], compare: str = "lp") -> dict[str, Any]:
    (a, b), _ = SIDES[compare]
    out: dict[str, Any] = {}
    for key in ("cpu", "wall", "lp_time", "lp_iterations", "start_time", "milp_time"):
        unit = "" if key == "lp_iterations" else "_s"
        c = float(sum(r[f"{key}_{a}{unit}"] for r in rows))
        w = float(sum(r[f"{key}_{b}{unit}"] for r in rows))
        out[f"{key}_{a}{unit}"], out[f"{key}_{b}{unit}"] = c, w
        out[f"{key}_ratio_{a}_over_{b}"] = c / w if w else math.nan
    out["max_cost_rel_diff"] = max((r["cost_rel_diff"] for r in rows
                                    if not math.isnan(r["cost_rel_diff"])), default=0.0)
    for label in (a, b):      # clearings that ended without a solution (e.g. time limit)
        out[f"not_optimal_{label}"] = [r["clearing"] for r in rows
                                       if r[f"status_{label}"] != "optimal"]
    out["all_same_points"] = all(r["same_points"] for r in rows)
    out["all_same_status"] = all(r[f"status_{a}"] == r[f"status_{b}"] for r in rows)
    return out


def figure(rows: list[dict[str, Any]], compare: str, path: Path, title: str) -> None:
    """Per call the wall time of both sides (bars, log scale) and the relative cost
    difference (points, right axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (a, b), _ = SIDES[compare]
    k = [r["clearing"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(rows) + 2), 4))
    w = 0.4
    for off, label in ((-w / 2, a), (w / 2, b)):
        tot = sum(r[f"wall_{label}_s"] for r in rows)
        ax.bar([x + off for x in k], [r[f"wall_{label}_s"] for r in rows], w,
               label=f"{label}: {tot:.1f} s in all")
        for r in rows:      # a clearing without an optimal end: its status on the bar
            if r[f"status_{label}"] != "optimal":
                ax.text(r["clearing"] + off, r[f"wall_{label}_s"], r[f"status_{label}"],
                        rotation=90, ha="center", va="top", fontsize=7, color="white")
    ax.set_yscale("log")
    ax.set_xlabel("clearing (call of clear_region)")
    ax.set_ylabel("wall time (s)")
    ax.set_xticks(k)
    ax2 = ax.twinx()
    diff = [math.nan if r["cost_rel_diff"] is None else r["cost_rel_diff"] for r in rows]
    ax2.plot(k, diff, "k.", label="relative cost difference (both optimal)")
    ax2.set_ylabel("|cost difference| / cost")
    ax2.set_ylim(0, max([1e-3] + [1.2 * d for d in diff if not math.isnan(d)]))
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_region_args(p)
    p.add_argument("--areas", type=int, default=0, help="the first N LV areas (0: all)")
    p.add_argument("--processes", type=int, default=2, help="LV DSO processes")
    p.add_argument("--save", default=None, help="also write the recorded calls (pickle)")
    p.add_argument("--load", default=None, help="replay recorded calls instead of running")
    p.add_argument("--compare", choices=sorted(SIDES), default="lp")
    p.add_argument("--calls", default=None, help="A:B replays the calls A..B-1 only")
    p.add_argument("--only", default=None,
                   help="replay one side of --compare only (print, write nothing)")
    p.add_argument("--out", default=None)
    p.add_argument("--replot", default=None, help="only redraw the figure of a written JSON")
    a = p.parse_args(argv)
    if a.replot:
        done = json.loads(Path(a.replot).read_text())
        figure(done["clearings"], done["compare"], Path(a.replot).with_suffix(".png"),
               f"{done['loaded_from'] or done['grid']}: {' vs '.join(done['sides'])}, "
               f"mip_rel_gap {done['mip_rel_gap']}")
        return done
    if a.load:
        calls = pickle.loads(Path(a.load).read_bytes())
    else:
        calls = capture(a)
        if a.save:
            Path(a.save).write_bytes(pickle.dumps(calls))
    first, last = 0, len(calls)
    if a.calls:
        lo, _, hi = a.calls.partition(":")
        first, last = int(lo or 0), int(hi) if hi else len(calls)
    (sa, sb), _ = SIDES[a.compare]
    if a.only:
        if a.only not in (sa, sb):
            p.error(f"--only: {a.compare!r} has the sides {sa!r} and {sb!r}")
        return {"wall_s": replay_one(calls[first:last], a.compare, a.only, first)}
    load0 = os.getloadavg()[0]
    rows = replay(calls[first:last], a.compare, first)
    tot = totals(rows, a.compare)
    print(f"{len(rows)} clearings: wall {sa} {tot[f'wall_{sa}_s']:.1f} s, {sb} "
          f"{tot[f'wall_{sb}_s']:.1f} s (x{tot[f'wall_ratio_{sa}_over_{sb}']:.2f}); CPU "
          f"x{tot[f'cpu_ratio_{sa}_over_{sb}']:.2f}; LP relaxations "
          f"{tot[f'lp_time_{sa}_s']:.1f} / {tot[f'lp_time_{sb}_s']:.1f} s, incumbent "
          f"{tot[f'start_time_{sa}_s']:.1f} / {tot[f'start_time_{sb}_s']:.1f} s, MILP "
          f"{tot[f'milp_time_{sa}_s']:.1f} / {tot[f'milp_time_{sb}_s']:.1f} s; largest cost "
          f"difference {tot['max_cost_rel_diff']:.1e}; same points: {tot['all_same_points']}",
          flush=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = {"grid": a.grid, "frames": a.frames, "start": a.start, "day_type": a.day_type,
           "areas": a.areas, "processes": a.processes, "mip_rel_gap": a.mip_rel_gap,
           "compare": a.compare, "sides": [sa, sb], "calls": [first, last],
           "loaded_from": a.load, "load_avg_before": load0,
           "load_avg_after": os.getloadavg()[0], "totals": tot, "clearings": rows,
           "note": f"{sa} and {sb} replayed alternately in one process (2 shared cores); "
                   "cpu = time.process_time of this process"}
    name = "region_replay" if a.compare == "lp" else f"region_replay_{a.compare}"
    path = Path(a.out or OUT_DIR / f"{name}-{stamp}.json")
    write_json(path, out)
    print(f"written {path}")
    if a.compare != "lp":
        figure(rows, a.compare, path.with_suffix(".png"),
               f"{a.load or a.grid}: {sa} vs {sb}, mip_rel_gap "
               f"{rows and pickle.loads(calls[first])[1].get('mip_rel_gap')}")
        print(f"written {path.with_suffix('.png')}")
    return out


if __name__ == "__main__":
    main()
