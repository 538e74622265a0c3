"""Benchmark: the region's safety rule over a window of SimBench frames, in process.

``python -m bench.bench_region_safety [--grid ...] [--areas 0] [--frames 4] [--start 0]
[--day-type winter_workday] [--privacy full|exact] [--max-rounds 3] [--no-tighten]
[--no-margin] [--no-warm-point] [--out FILE]`` chains
frames of the in-process study (:func:`flexcore.region.study.run_region` with
``previous``) the way the co-simulation's agents do per frame (each DSO re-linearises at
the frame's loads and its measured slack voltage / draws; the frame starts from the previous
one as :class:`flexcore.region.dsos.FramePolicy` says), on the bids and profiles of
:func:`bench.bench_region_cosim.load_region`. Per frame it prints and writes the verdict,
the dispatched round, cost, rounds, time, the violations of every round and, for every row
the last round's AC check calls violated (base-case rule of :mod:`flexcore.region.study`),
how far past its limit it is, the clearing's prediction there, its base value and whether
the clearing predicted it at its limit. ``--no-tighten`` / ``--no-margin``: the
:class:`~flexcore.dso.refinement.RefinementPolicy` without tightening / solver margin;
``--no-warm-point``: the :class:`~flexcore.region.dsos.FramePolicy` without the warm point.
``results/benchmarks/region_safety-<UTC>.json``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_region_cosim import add_region_args, load_region
from flexcore.dso.refinement import RefinementPolicy
from flexcore.region.dsos import FramePolicy
from flexcore.region.study import (
    BINDING_LOADING_PERCENT,
    BINDING_VM_PU,
    RegionReport,
    RegionSetup,
    run_region,
    setup_region,
)
from flexcore.runs import write_json

OUT_DIR = Path("results/benchmarks")


def new_frame(setup: RegionSetup, inj, frame: int, fractions=(0.0, 0.5, 1.0)) -> None:
    """Frame ``frame``'s injections into the validator's grid and every DSO's model; each
    DSO re-linearises at them and at its measured slack voltage (LV) / draws (MV), as the
    agents do (``agents.region_dso`` ``start``)."""
    from flexcore.region.split import AREA_LOAD_PREFIX

    inj.apply(setup.grid.net, frame)
    base = setup.grid.run(setup.bid_bus, np.zeros(len(setup.bid_bus)))
    for d in setup.lv:
        net = d.area.net
        inj.apply(net, frame)
        d.relinearize(fractions, net=net, slack_vm_pu=base.vm_pu[d.area.mv_bus])
    if setup.mv is not None:
        mv_net = setup.region.mv_net
        inj.apply(mv_net, frame)
        names = mv_net.load.name.astype(str)
        for a in setup.region.areas:
            i = mv_net.load.index[names == AREA_LOAD_PREFIX + a.name][0]
            mv_net.load.at[i, "p_mw"] = base.trafo_p_mw[a.trafo]
            mv_net.load.at[i, "q_mvar"] = base.trafo_q_mvar[a.trafo]
        setup.mv.relinearize(fractions, net=mv_net)


def violated_rows(setup: RegionSetup, rep: RegionReport, base) -> list[dict[str, Any]]:
    """Every row of the report's AC result the base-case rule calls violated, with the
    prediction of the clearing that was checked last."""
    from flexcore.region.study import LOADING_TOL_PERCENT, VM_TOL_PU

    c = getattr(rep, "last_clearing", rep.dispatch)
    ac = getattr(rep, "last_ac", rep.ac)
    if c is None or ac is None or not ac.converged:
        return []
    out = []
    blocks = [(d.name, setup.area_name(d), d.lin.keymap, d.package,
               c.predicted_vm_pu[d.name], c.predicted_loading_percent[d.name],
               setup.region.lv_limits, c.points.get(d.name)) for d in setup.lv]
    if setup.mv is not None:
        blocks.append(("mv", "mv", setup.mv.lin.keymap, setup.mv.package,
                       c.mv_predicted_vm_pu, c.mv_predicted_loading_percent,
                       setup.region.mv_limits, c.mv_point))
    for name, area, km, pkg, pvm, pld, lim, point in blocks:
        for kind, keys, pred, vals, bvals, lo, hi, tol, tb in (
                ("vm_pu", [km.vm_pu[k] for k in pkg.vm_rows], pvm, ac.vm_pu, base.vm_pu,
                 lim.vm_min_pu, lim.vm_max_pu, VM_TOL_PU, BINDING_VM_PU),
                ("loading_percent", [km.loading_percent[k] for k in pkg.loading_rows], pld,
                 ac.loading_percent, base.loading_percent, lim.loading_min_percent,
                 lim.loading_max_percent, LOADING_TOL_PERCENT, BINDING_LOADING_PERCENT)):
            for key, p in zip(keys, np.asarray(pred, float)):
                a, b = vals[key], bvals[key]
                lo_v = a < lo - tol and a < b - tol
                hi_v = a > hi + tol and a > b + tol
                if lo_v or hi_v:
                    limit = lo if lo_v else hi
                    out.append({"area": area, "dso": name, "kind": kind, "row": str(key),
                                "ac": a, "predicted": float(p), "limit": limit, "base": b,
                                "past_limit": abs(a - limit), "error": a - float(p),
                                "predicted_at_limit": bool(abs(float(p) - limit) <= tb),
                                "point": point})
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_region_args(p)
    p.add_argument("--areas", type=int, default=0, help="the first N LV areas (0: all)")
    p.add_argument("--privacy", default="full", choices=("full", "exact"))
    p.add_argument("--request-share", type=float, default=None)
    p.add_argument("--no-tighten", action="store_true",
                   help="RefinementPolicy(tighten_unsafe=False)")
    p.add_argument("--no-margin", action="store_true",
                   help="RefinementPolicy(solver_margin=False)")
    p.add_argument("--no-warm-point", action="store_true",
                   help="FramePolicy(warm_point=False)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    refinement = RefinementPolicy(max_rounds=a.max_rounds, tighten_unsafe=not a.no_tighten,
                                  solver_margin=not a.no_margin)
    policy = FramePolicy(warm_point=not a.no_warm_point)
    region, _, cfg0, bids_all, inj = load_region(a)
    names = [x.name for x in region.areas][:a.areas or None]
    bids = {x: bids_all[x] for x in names if x in bids_all}
    share = cfg0.request_share if a.request_share is None else a.request_share
    request = share * float(sum(b.volume_mw.sum() for b in bids.values()))
    t0 = time.perf_counter()
    setup = setup_region(region, bids, seed=cfg0.seed, secret="bench-safety")
    print(f"{len(bids)} areas, request {request:.3f} MW, setup "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    rep = None
    frames = []
    for f in range(a.frames):
        t1 = time.perf_counter()
        if inj is not None:
            new_frame(setup, inj, f)
        base = setup.grid.run(setup.bid_bus, np.zeros(len(setup.bid_bus)))
        rep = run_region(setup, request, max_rounds=a.max_rounds, mip_rel_gap=a.mip_rel_gap,
                         time_limit_s=cfg0.time_limit_s, privacy=a.privacy, previous=rep,
                         refinement=refinement, policy=policy)
        rows = violated_rows(setup, rep, base)
        row = {"frame": a.start + f, "status": rep.status, "dispatched": getattr(
                   rep, "dispatched", rep.status == "optimal"),
               "dispatched_round": getattr(rep, "dispatched_round", rep.rounds),
               "rounds": rep.rounds,
               "cost_eur_per_h": rep.cost_eur_per_h, "ac_safe": rep.ac_safe,
               "rows_tightened": sum(h.get("rows_tightened", 0) for h in rep.history),
               "history": [{k: h[k] for k in ("round", "cost_eur_per_h", "ac_safe",
                                              "violations", "max_vm_err_pu",
                                              "max_loading_err_percent")
                            if k in h} for h in rep.history],
               "violated_rows_last_round": rows, "wall_s": time.perf_counter() - t1}
        frames.append(row)
        worst = max(rows, key=lambda r: r["past_limit"], default=None)
        print(f"frame {row['frame']}: {row['status']} dispatched round "
              f"{row['dispatched_round']} of {rep.history[-1]['round'] if rep.history else '-'}"
              f", cost {row['cost_eur_per_h']:.3f}, violations per round "
              f"{[h['violations'] for h in rep.history]}, tightened {row['rows_tightened']}, "
              f"{row['wall_s']:.1f} s" + (
                  f"; last round: {len(rows)} row(s) past a limit, worst {worst['area']} "
                  f"{worst['kind']} {worst['ac']:.6f} (limit {worst['limit']}, predicted "
                  f"{worst['predicted']:.6f}, base {worst['base']:.6f}, past by "
                  f"{worst['past_limit']:.2e})" if worst else ""), flush=True)
        for r in rows:
            print(f"    {r['area']:>8} {r['kind']:<15} ac {r['ac']:.7f} pred "
                  f"{r['predicted']:.7f} limit {r['limit']} base {r['base']:.7f} past "
                  f"{r['past_limit']:.2e} err {r['error']:+.2e} at-limit "
                  f"{r['predicted_at_limit']} point {r['point']}", flush=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out = {"grid": a.grid, "areas": len(bids), "start": a.start, "frames": frames,
           "privacy": a.privacy, "max_rounds": a.max_rounds, "request_mw": request,
           "day_type": a.day_type, "refinement": refinement.__dict__,
           "frame_policy": policy.as_dict(),
           "unsafe_frames": [f["frame"] for f in frames if f["violated_rows_last_round"]],
           "undispatched_frames": [f["frame"] for f in frames if not f["dispatched"]],
           "wall_s": float(sum(f["wall_s"] for f in frames))}
    path = Path(a.out) if a.out else OUT_DIR / f"region_safety-{stamp}.json"
    write_json(path, out)
    print(f"written {path}")
    return out


if __name__ == "__main__":
    main()
