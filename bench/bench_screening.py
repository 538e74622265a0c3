"""Exact format-2 screening per published package in the co-simulation (issue 16 budget).

``python bench/bench_screening.py [--frames 68-76] [--day-type winter_workday] [--reference]``

Builds the DSO's round-0 packages of consecutive co-simulation frames exactly as
``flexcore.dso.frame.DsoFrames`` does (scenarios/bergwald.toml: 1068 bids, points a = 0 /
0.5 / 1, relinearised every 4 frames) and times ``flexcore.dso.privacy.harden`` per
package: cold (no cache: the first publication of a run) and warm (one ScreeningCache over
the frames, as the DSO agent keeps it), with the sides kept, LPs solved, sides confirmed by
witnesses and dropped by dual certificates. ``--reference`` also times the reference
method (one LP per candidate over all kept sides, ``_screen_sequential``) on point 0 of
the first frame. Both methods must keep the same number of sides (printed). Writes
``results/benchmarks/screening.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from flexcore.district.clock import FrameClock
from flexcore.dso import privacy
from flexcore.dso.frame import DsoFrames, catalog_bids
from flexcore.dso.linearizer import Linearizer
from flexcore.exchange.limits import Limits
from flexcore.grid.district_grid import BuildingInjections, district_net
from scenarios.config import load_config
from simulators.building_sim import BuildingSim
from simulators.fpu_sim import FPUSim

OUT = Path("results") / "benchmarks"


def packages(day_type: str, slots: list[int]) -> list[tuple]:
    cfg = load_config("scenarios/bergwald.toml")
    clock = FrameClock.for_day_types((day_type,), slots)
    common = dict(grid="bergwald", buildings="bergwald", seed=cfg.seed,
                  pv_penetration=cfg.pv_penetration, clock=clock.to_dict())
    fpu, bsim = FPUSim(), BuildingSim()
    fpu.init("F")
    bsim.init("B")
    fpu.create(1, "Fleet", fpu=[dict(u) for u in cfg.fpu], **common)
    bsim.create(1, "District", **common)
    d = cfg.dso
    net, *buildings = district_net("bergwald")
    inj = BuildingInjections(net, *buildings)
    lin = Linearizer(net, catalog_bids(fpu.catalog(), inj.bus_of), salt="bench",
                     limits=Limits.from_dict(d.limits))
    frames = DsoFrames(lin, inj, d.__dict__ | {"operating_points": list(d.operating_points)},
                       clock)
    out = []
    for k in range(len(clock.frames)):
        t = k * clock.step_s
        fpu.step(t, {}, None)
        bsim.step(t, {}, None)
        o, b = fpu._out, bsim._out
        step = frames.open_frame(k, p_load_mw=b["P_load[MW]"], q_load_mvar=b["Q_load[MVAr]"],
                                 p_pv_mw=b["P_pv[MW]"], dp_base_mw=o["dP_base[MW]"],
                                 offers=o["offers"])
        box = lin.bids.subset(step.package.columns)
        out.append((slots[k], step.package, box.lower_mw, box.upper_mw,
                    frames.report["relinearized"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--day-type", default="winter_workday")
    ap.add_argument("--frames", default="68-76", help="slots of the day, e.g. 68-76")
    ap.add_argument("--reference", action="store_true")
    args = ap.parse_args()
    a, _, b = args.frames.partition("-")
    slots = list(range(int(a), int(b or a) + 1))
    rows = []
    cache = privacy.ScreeningCache()
    for slot, pkg, lo, hi, due in packages(args.day_type, slots):
        rec = {"slot": slot, "relinearized": due}
        for name, c in (("warm", cache), ("cold", None)):
            if name == "cold" and rows:
                continue  # cold = the first publication only (it is slow)
            t0 = time.perf_counter()
            _, key = privacy.harden(pkg, lower_mw=lo, upper_mw=hi, cache=c)
            r = key.report
            rec[name] = {"time_s": time.perf_counter() - t0, **{
                k: r[k] for k in ("sides_after_box", "sides_kept", "lps", "witness_confirmed",
                                  "certificate_drops", "batch_drops")}}
        print(slot, json.dumps(rec), flush=True)
        rows.append(rec)
    out = {"day_type": args.day_type, "packages": rows,
           "warm_mean_s": float(np.mean([r["warm"]["time_s"] for r in rows]))}
    if args.reference:
        _, pkg, lo, hi, _ = packages(args.day_type, slots[:1])[0]
        t0 = time.perf_counter()
        a_, rhs, *_ = privacy.screen_point(pkg, 0, lo, hi)
        new_s = time.perf_counter() - t0
        a_raw, c, _ = privacy._sides(pkg, 0)
        a_n, rhs_n, _ = privacy._normalise(a_raw, c)
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        box_max = a_n @ centre + np.abs(a_n) @ half
        idx = np.flatnonzero(box_max > rhs_n + 1e-9 * (1 + np.abs(rhs_n)))
        pf = pkg.p_flex_mw
        d = pf[1:] - pf[0]
        t0 = time.perf_counter()
        kept, _, lps = privacy._screen_sequential(
            a_n[idx], rhs_n[idx], box_max[idx], d, np.einsum("jn,jn->j", d, 0.5 * (pf[1:] + pf[0])),
            lo, hi)
        out["reference_point0"] = {"time_s": time.perf_counter() - t0, "kept": int(kept.sum()),
                                   "lps": lps,
                                   "new_time_s": new_s, "new_kept": len(rhs)}
        print("reference point 0:", out["reference_point0"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "screening.json").write_text(json.dumps(out, indent=1))
    print(f"warm mean {out['warm_mean_s']:.2f} s per package -> {OUT / 'screening.json'}")


if __name__ == "__main__":
    main()
