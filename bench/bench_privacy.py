"""The cost of privacy: envelope packages vs the exact (format-1) clearing; privacy audit.

``python bench/bench_privacy.py [--quick]`` (``--quick``: the default and the cost envelope
only, no day): the single-frame study on Bergwald, results/benchmarks/privacy.json.
``--day``: only the day of hourly frames, results/benchmarks/privacy_day.json.
``--grids``: the single-frame study and audit on SimBench 1-LV-semiurb4--0-sw, its meshed
variant and pandapower's mv_oberrhein (:func:`grid_case`),
results/benchmarks/privacy_grids.json. ``--day-audit GRID``: a day of format-2 packages
attacked together. Each prints a table.

Study (the source's single frame): Bergwald, ``synthetic_bids(load_grid("bergwald"), seed=1,
table=load_building_table())``, operating points a = 0 / 0.5 / 1. The exact maximum
deliverable request ``q_max`` is the diagnosis of the format-1 package
(``flexcore.market.diagnose``), confirmed AC-safe by the refinement loop. For requests of
10 % ... 100 % of ``q_max``:

- exact cost: ``flexcore.study.coordination.coordinate`` (format-1 clearing with refinement
  rounds, AC-checked);
- envelope cost: ``flexcore.market.envelope.clear_envelope`` on the envelope package of
  each variant (point, weighting), every clearing also run in AC;
- cost of privacy = envelope cost / exact cost - 1; the envelope's deliverable maximum is
  the sum of its upward ranges. Where the exact clearing stays AC-unsafe after its
  refinement rounds (``safe`` false in the JSON), a safe exact clearing would cost at least
  as much: the cost of privacy there is an overestimate.

Also: the envelopes' AC corner checks, and the privacy audit (``flexcore.dso.audit.audit``)
of the format-1 package, its format-2 form (with the bounds from the hardening key) and the
envelope, plus the one thing the envelope itself reveals: which bids are capped below their
volume.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from flexcore.district.buildings import load_building_table
from flexcore.dso.audit import audit
from flexcore.dso.envelope import EnvelopeError, envelope, envelope_with_report
from flexcore.dso.linearizer import Linearizer
from flexcore.exchange.limits import VIOLATION_TOL
from flexcore.grid.grids import load_grid
from flexcore.market.diagnose import diagnose
from flexcore.market.direct import prepare
from flexcore.market.envelope import clear_envelope
from flexcore.study.bidgen import synthetic_bids
from flexcore.study.coordination import coordinate

FRACTIONS = tuple(sorted([k / 10 for k in range(1, 11)] + [0.75]))
#: (name, point index in the a = 0 / 0.5 / 1 package, weighting, price exponent, min share)
VARIANTS: tuple[tuple[Any, ...], ...] = (
    ("a=0.5 price^2 (default)", 1, "price", 2.0),
    ("a=0.5 cost <= 3 %", 1, "cost", 2.0, 0.0, {"max_cop": 0.03}),
    ("a=0.5 price^2 share>=95%", 1, "price", 2.0, 0.95),
    ("a=0.5 price^1", 1, "price", 1.0),
    ("a=0.5 price^3", 1, "price", 3.0),
    ("a=0.5 merit order", 1, "merit", 2.0),
    ("a=0.5 total MW", 1, "total", 2.0),
    ("a=0.5 equal share", 1, "share", 2.0),
    ("a=0 price^2", 0, "price", 2.0),
    ("all points price^2", (0, 1, 2), "price", 2.0),
)
SEED = 1


def study() -> dict[str, Any]:
    """The grid, bids, DSO linearizer and format-1 package of the single-frame study."""
    net = load_grid("bergwald")
    bids = synthetic_bids(net, seed=SEED, table=load_building_table())
    lin = Linearizer(net, bids, salt="bench-privacy")
    pkg = lin.linearize((0.0, 0.5, 1.0)).package
    q_max = diagnose(prepare(pkg, bids.without_bus(), 1e3)).max_deliverable_mw
    return {"net": net, "bids": bids, "linearizer": lin, "package": pkg, "q_max_mw": q_max}


def ac_safe(lin: Linearizer, x: np.ndarray) -> bool:
    """AC power flow at activation ``x`` keeps every voltage and loading limit."""
    vm, ld = lin.power_flow(x)
    lim = lin.limits
    return bool(np.all(vm >= lim.vm_min_pu - VIOLATION_TOL)
                and np.all(vm <= lim.vm_max_pu + VIOLATION_TOL)
                and np.all(ld >= lim.loading_min_percent - VIOLATION_TOL)
                and np.all(ld <= lim.loading_max_percent + VIOLATION_TOL))


def exact_costs(s: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for f in FRACTIONS:
        q = f * s["q_max_mw"]
        r = coordinate(s["linearizer"], s["bids"], q, package=s["package"])
        out.append({"fraction": f, "request_mw": q, "status": str(r.clearing.status),
                    "safe": r.safe, "rounds": len(r.rounds),
                    "cost_eur_per_h": r.clearing.cost_eur_per_h if r.clearing.ok else None})
    return out


def run_variant(s: dict[str, Any], exact: list[dict[str, Any]], name: str, point: Any,
                weighting: str, k: float, min_share: float = 0.0,
                more: dict[str, Any] | None = None) -> dict[str, Any]:
    lin, bids, pkg = s["linearizer"], s["bids"], s["package"]
    t0 = time.perf_counter()
    hp, rep = envelope_with_report(pkg, bids, point=point, weighting=weighting,
                                   price_exponent=k, min_share=min_share, linearizer=lin,
                                   rng=np.random.default_rng(SEED), **(more or {}))
    t_env = time.perf_counter() - t0
    rows = []
    tso_bids = bids.without_bus()
    for e in exact:
        c = clear_envelope(hp, tso_bids, e["request_mw"])
        cost = c.cost_eur_per_h if c.ok else None
        safe = ac_safe(lin, c.activation_vector(bids.ids)) if c.ok else None
        exact_rate = e["cost_eur_per_h"]
        cop = (cost / exact_rate - 1.0) if cost is not None and exact_rate else None
        rows.append({"fraction": e["fraction"], "request_mw": e["request_mw"],
                     "status": str(c.status), "cost_eur_per_h": cost, "cost_of_privacy": cop,
                     "ac_safe": safe})
    corners = rep.corners
    vol = np.abs(bids.subset(hp.columns).volume_mw)
    span = np.maximum(hp.upper_mw, -hp.lower_mw) if hp.upper_mw is not None \
        and hp.lower_mw is not None else np.zeros(hp.n)
    return {
        "name": name, "points": list(rep.points), "weighting": weighting,
        "price_exponent": k, "min_share": min_share, "time_s": t_env,
        "deliverable_max_mw": rep.upper_total_mw,
        "deliverable_fraction_of_exact": rep.upper_total_mw / s["q_max_mw"],
        "ac_rounds": rep.rounds, "ac_tightened_rows": rep.tightened_rows,
        "ac_corners_checked": len(corners),
        "ac_corner_violations": sum(c.violations for c in corners),
        "ac_corner_violations_final_round": sum(c.violations for c in corners
                                                if c.round == rep.rounds),
        "ac_safe": rep.ac_safe,
        "ac_corner_max_error_vm_pu": max(c.max_abs_error_vm_pu for c in corners),
        "ac_corner_max_error_loading_percent": max(c.max_abs_error_loading_percent
                                                   for c in corners),
        "bids_capped_below_volume": int(np.sum(span < vol - 1e-9)),
        "bids_zero_range": int(np.sum(span <= 1e-12)),
        "requests": rows,
        "max_cost_of_privacy_up_to_75pct": _max([r["cost_of_privacy"] for r in rows
                                                 if r["fraction"] <= 0.75 + 1e-9]),
        "clearings_ac_unsafe": sum(1 for r in rows if r["ac_safe"] is False),
        "_package": hp,
    }


def _max(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if len(vals) == len(values) and vals else None


#: envelope variants compared over the day (kwargs of envelope_with_report)
DAY_VARIANTS: dict[str, dict[str, Any]] = {
    "price^2": {"weighting": "price"},
    "cost <= 3 %": {"weighting": "cost", "max_cop": 0.03},
    "cost <= 2 %": {"weighting": "cost", "max_cop": 0.02},
}


def day(s: dict[str, Any], *, day_type: str = "summer_workday",
        fractions: tuple[float, ...] = (0.25, 0.5, 0.75),
        variants: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Envelope ``variants`` over the hourly frames of one day type: the buildings' load and
    PV profiles (``flexcore.district.profiles``) as the fixed injections, the same bids; per
    frame the exact maximum, each envelope's share of it and the cost of privacy at
    ``fractions`` of it (the exact clearings, with AC refinement, are shared by the
    variants). Not a mosaik co-simulation: the frames are independent (no unit state), as
    in the DSO agent's per-frame package."""
    from flexcore.district.daytypes import make_frames
    from flexcore.district.profiles import BuildingProfiles

    variants = DAY_VARIANTS if variants is None else variants
    lin, bids = s["linearizer"], s["bids"]
    net = s["net"]
    prof = BuildingProfiles.from_table(load_building_table(), seed=SEED)
    frames = make_frames(day_types=[day_type], resolution_min=60)
    pf = prof.for_frames(frames)
    pos = {b: k for k, b in enumerate(pf.building_ids)}
    li = np.array([pos[str(b)] for b in net.load.name])
    si = np.array([pos[str(b)] for b in net.sgen.name])
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        for t, fr in enumerate(frames):
            lin.set_base(load_p_mw=pf.load_p_mw[t, li], load_q_mvar=pf.load_q_mvar[t, li],
                         sgen_p_mw=pf.pv_p_mw[t, si])
            pkg = lin.linearize((0.0, 0.5, 1.0)).package
            diag = diagnose(prepare(pkg, bids.without_bus(), 1e3))
            q_max = diag.max_deliverable_mw
            if not q_max or q_max <= 0:   # e.g. the base case already violates a limit
                rows.append({"frame": str(fr.start), "pv_mw": float(pf.pv_p_mw[t].sum()),
                             "exact_max_mw": q_max, "exact_safe": [], "variants": {},
                             "note": diag.message})
                continue
            exact = [coordinate(lin, bids, f * q_max, package=pkg) for f in fractions]
            row: dict[str, Any] = {"frame": str(fr.start), "pv_mw": float(pf.pv_p_mw[t].sum()),
                                   "load_mw": float(pf.load_p_mw[t].sum()),
                                   "exact_max_mw": q_max,
                                   "exact_safe": [e.safe for e in exact], "variants": {}}
            for name, kw in variants.items():
                try:
                    hp, rep = envelope_with_report(pkg, bids, linearizer=lin,
                                                   rng=np.random.default_rng(SEED), **kw)
                except EnvelopeError as exc:   # the base case itself violates a limit
                    row["variants"][name] = {"envelope_error": str(exc)}
                    continue
                reqs = []
                for f, ex in zip(fractions, exact):
                    env = clear_envelope(hp, bids.without_bus(), f * q_max)
                    ok = ex.clearing.ok and env.ok and bool(ex.clearing.cost_eur_per_h)
                    reqs.append({
                        "fraction": f, "exact_cost_eur_per_h": ex.clearing.cost_eur_per_h,
                        "envelope_cost_eur_per_h": env.cost_eur_per_h,
                        "envelope_ac_safe": ac_safe(lin, env.activation_vector(bids.ids))
                        if env.ok else None,
                        "cost_of_privacy": env.cost_eur_per_h / ex.clearing.cost_eur_per_h - 1.0
                        if ok else None})
                row["variants"][name] = {
                    "envelope_max_mw": rep.upper_total_mw, "point": list(rep.points),
                    "envelope_fraction": rep.upper_total_mw / q_max if q_max else None,
                    "ac_rounds": rep.rounds, "ac_safe": rep.ac_safe, "requests": reqs}
            rows.append(row)
            print(f"{fr.start} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr,
                  flush=True)
    finally:
        lin.set_base(load_p_mw=net.load.p_mw.to_numpy(float),
                     load_q_mvar=net.load.q_mvar.to_numpy(float),
                     sgen_p_mw=net.sgen.p_mw.to_numpy(float))
    summary = {}
    for name in variants:
        vs = [x["variants"][name] for x in rows if name in x["variants"]]
        cops = [r["cost_of_privacy"] for v in vs for r in v.get("requests", [])]
        fr_ = [v["envelope_fraction"] for v in vs if v.get("envelope_fraction") is not None]
        known = [c for c in cops if c is not None]
        summary[name] = {
            "min_envelope_fraction": min(fr_) if fr_ else None,
            "median_envelope_fraction": float(np.median(fr_)) if fr_ else None,
            "max_cost_of_privacy": max(known) if known else None,
            "median_cost_of_privacy": float(np.median(known)) if known else None,
            "envelope_infeasible_requests": len(cops) - len(known),
            "frames_without_envelope": sum(1 for v in vs if "envelope_error" in v),
            "envelope_clearings_ac_unsafe": sum(1 for v in vs for r in v.get("requests", [])
                                                if r["envelope_ac_safe"] is False)}
    return {"day_type": day_type, "fractions": list(fractions), "frames": rows,
            "summary": summary,
            "exact_clearings_ac_unsafe": sum(1 for x in rows for ok in x["exact_safe"]
                                             if not ok)}


def audits(s: dict[str, Any], hp: Any) -> dict[str, Any]:
    """The audit of the format-1 package, its format-2 (exact) form (bounds from the
    hardening key) and the envelope ``hp``: score key -> [count, total] (None: n/a)."""
    from flexcore.dso.privacy import harden

    pkg, lin, bids = s["package"], s["linearizer"], s["bids"]
    box = bids.subset(pkg.columns)
    hard, key = harden(pkg, lower_mw=box.lower_mw, upper_mw=box.upper_mw,
                       rng=np.random.default_rng(SEED))
    out: dict[str, Any] = {}
    for lvl, p, kw in (("format1", pkg, {}), ("format2", hard, {"hardening_key": key}),
                       ("envelope", hp, {})):
        a = audit(p, net=s["net"], keymap=lin.keymap, bids=bids, order_permutations=50, **kw)
        out[lvl] = {sc.key: [sc.count, sc.total] if sc.applicable else None
                    for sc in a.scores}
        if "bounds" in a.package:
            out[f"{lvl}_bounds"] = a.package["bounds"]
    return out


def bench(*, quick: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    s = study()
    exact = exact_costs(s)
    variants = [run_variant(s, exact, *v) for v in (VARIANTS[:2] if quick else VARIANTS)]
    aud = audits(s, variants[0]["_package"])
    days = [] if quick else [day(s)]
    for v in variants:
        del v["_package"]
    out = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "study": f"bergwald, synthetic_bids seed={SEED}, points 0/0.5/1",
           "exact_max_deliverable_mw": s["q_max_mw"],
           "exact_max_safe": exact[-1]["safe"], "exact": exact, "envelopes": variants,
           "audit": aud, "days": days, "wall_s": time.perf_counter() - t0}
    path = Path("results/benchmarks/privacy.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}%"


def table(out: dict[str, Any]) -> str:
    q = out["exact_max_deliverable_mw"]
    lines = [f"exact maximum deliverable {q:.3f} MW (AC-safe after refinement: "
             f"{out['exact_max_safe']})", ""]
    head = "request    " + " ".join(f"{r['fraction']:>6.0%}" for r in out["exact"])
    safe = "AC-safe    " + " ".join(f"{'yes' if r['safe'] else 'NO':>6}" for r in out["exact"])
    lines += [head, "MW         " + " ".join(f"{r['request_mw']:6.3f}" for r in out["exact"]),
              "exact EUR/h" + " ".join(f"{r['cost_eur_per_h']:6.1f}"
                                       if r["cost_eur_per_h"] is not None
                                       else "     -" for r in out["exact"]), safe, ""]
    lines.append("cost of privacy (envelope cost / exact cost - 1); max deliverable; AC")
    for v in out["envelopes"]:
        cells = " ".join(f"{_pct(r['cost_of_privacy']):>6}" for r in v["requests"])
        lines.append(f"{v['name']:<24} max {v['deliverable_max_mw']:.3f} MW "
                     f"({v['deliverable_fraction_of_exact']:.1%}), corners "
                     f"{v['ac_corners_checked']} checked, {v['ac_corner_violations']} "
                     f"violation(s), {v['ac_rounds']} tightening round(s), unsafe "
                     f"clearings {v['clearings_ac_unsafe']}, capped bids "
                     f"{v['bids_capped_below_volume']}")
        lines.append(f"{'':<11}" + cells)
    aud = out["audit"]
    if aud.get("format2"):
        lines += ["", f"{'audit score':<30} {'format 1':>10} {'format 2':>10} {'envelope':>10}"]
        keys = list(dict.fromkeys([*aud["format1"], *aud["format2"]]))

        def cell(v: Any) -> str:
            return "n/a" if v is None else f"{v[0]}/{v[1]}"
        for key in keys:
            lines.append(f"{key:<30} " + " ".join(
                f"{cell(aud[lvl].get(key, None)):>10}" for lvl in ("format1", "format2",
                                                                   "envelope")))
        lines.append(f"format-2 bounds: {aud.get('format2_bounds')}")
    for d in out.get("days", []):
        fr = "/".join(f"{f:.0%}" for f in d["fractions"])
        lines += ["", f"day {d['day_type']} (hourly frames): exact max MW; per variant the "
                  f"envelope share, point and cost of privacy at {fr}"]
        for x in d["frames"]:
            if not x["variants"]:
                lines.append(f"{x['frame'][11:16]}  no exact maximum: {x.get('note')}")
                continue
            cells = []
            for name, v in x["variants"].items():
                if "envelope_error" in v:
                    cells.append(f"{name}: none")
                    continue
                cells.append(f"{name}: {_pct(v['envelope_fraction'])} p{v['point']} "
                             + " ".join(_pct(r["cost_of_privacy"]) for r in v["requests"]))
            lines.append(f"{x['frame'][11:16]}  pv {x['pv_mw']:.3f}  max "
                         f"{x['exact_max_mw']:.3f}  " + " | ".join(cells))
        for name, m in d["summary"].items():
            lines.append(f"{name}: envelope share min {_pct(m['min_envelope_fraction'])} "
                         f"median {_pct(m['median_envelope_fraction'])}, cost of privacy "
                         f"median {_pct(m['median_cost_of_privacy'])} max "
                         f"{_pct(m['max_cost_of_privacy'])} "
                         f"({m['envelope_infeasible_requests']} request(s) beyond the "
                         f"envelope), AC-unsafe envelope clearings "
                         f"{m['envelope_clearings_ac_unsafe']}")
        lines.append(f"exact clearings AC-unsafe after refinement: "
                     f"{d['exact_clearings_ac_unsafe']}")
    return "\n".join(lines)


GRIDS = ("simbench:1-LV-semiurb4--0-sw", "meshed", "oberrhein")


def grid_case(name: str) -> tuple[Any, Any]:
    """(net, bids) of a ``--grids`` case: SimBench semiurb4 and its meshed variant with the
    bids of tests/test_hardened.py (synthetic seed 2, 30 % downward, volumes x3);
    ``oberrhein``: pandapower's ``mv_oberrhein`` (a real 20 kV grid, 179 buses, 147 MV/LV
    substations as loads) with one bid per load of 1.5-5 x its load (30 % downward,
    40-250 EUR/MWh, seed 2; smaller volumes bind no limit), ids ``bid-000`` ..."""
    from flexcore.exchange.bids import BidTable
    from tests.grid_helpers import meshed

    if name == "oberrhein":
        import pandapower.networks as pn

        net = pn.mv_oberrhein()
        rng = np.random.default_rng(2)
        ld = net.load[net.load.in_service]
        vol = np.round(rng.uniform(1.5, 5.0, len(ld)) * ld.p_mw.to_numpy(float), 6)
        vol[rng.random(len(ld)) < 0.3] *= -1
        bids = BidTable(ids=tuple(f"bid-{k:03d}" for k in range(len(ld))), volume_mw=vol,
                        price_eur_per_mwh=np.round(rng.uniform(40, 250, len(ld)), 2),
                        bus=ld.bus.to_numpy(np.int64))
        return net, bids
    net = load_grid(GRIDS[0])
    net = meshed(net) if name == "meshed" else net
    b = synthetic_bids(net, seed=2, downward_share=0.3)
    return net, BidTable(ids=b.ids, volume_mw=3.0 * b.volume_mw,
                         price_eur_per_mwh=b.price_eur_per_mwh, bus=b.bus)


def grids() -> dict[str, Any]:
    """``--grids``: the single-frame study and the audit (format 1 / 2 / envelope) on the
    :data:`GRIDS` cases (:func:`grid_case`), plus the largest box at each point (the
    ``"total"`` envelope: no weighting keeps more). Writes
    results/benchmarks/privacy_grids.json."""
    from flexcore.dso.audit import audit as run_audit
    from flexcore.dso.privacy import harden

    out: dict[str, Any] = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                           "grids": {}}
    for name in GRIDS:
        net, bids = grid_case(name)
        lin = Linearizer(net, bids, salt="bench-privacy")
        pkg = lin.linearize((0.0, 0.5, 1.0)).package
        q_max = diagnose(prepare(pkg, bids.without_bus(), 1e3)).max_deliverable_mw
        hp, rep = envelope_with_report(pkg, bids, linearizer=lin,
                                       rng=np.random.default_rng(SEED))
        largest = {}   # the largest box at each usable point: no weighting keeps more
        for i in range(pkg.m):
            try:
                largest[i] = envelope(pkg, bids, point=i, weighting="total").upper_mw.sum() \
                    / q_max
            except EnvelopeError:
                largest[i] = None
        reqs = []
        for f in FRACTIONS:
            ex = coordinate(lin, bids, f * q_max, package=pkg)
            env = clear_envelope(hp, bids.without_bus(), f * q_max)
            reqs.append({"fraction": f, "exact_cost_eur_per_h": ex.clearing.cost_eur_per_h,
                         "exact_safe": ex.safe, "envelope_cost_eur_per_h": env.cost_eur_per_h
                         if env.ok else None,
                         "cost_of_privacy": env.cost_eur_per_h / ex.clearing.cost_eur_per_h - 1.0
                         if env.ok and ex.clearing.ok and ex.clearing.cost_eur_per_h else None})
        box = bids.subset(pkg.columns)
        hard, key = harden(pkg, lower_mw=box.lower_mw, upper_mw=box.upper_mw,
                           rng=np.random.default_rng(SEED))
        aud = {lvl: run_audit(p, net=net, keymap=lin.keymap, order_permutations=20, **kw)
               for lvl, p, kw in (("format1", pkg, {}),
                                  ("format2", hard, {"hardening_key": key}),
                                  ("envelope", hp, {}))}
        out["grids"][name] = {
            "exact_max_deliverable_mw": q_max, "envelope_max_mw": rep.upper_total_mw,
            "envelope_fraction": rep.upper_total_mw / q_max, "envelope_points": list(rep.points),
            "ac_rounds": rep.rounds, "ac_safe": rep.ac_safe, "requests": reqs,
            "largest_box_fraction_per_point": largest,
            "max_cost_of_privacy_up_to_75pct": _max([r["cost_of_privacy"] for r in reqs
                                                     if r["fraction"] <= 0.75 + 1e-9]),
            "audit": {lvl: {sc.key: [sc.count, sc.total] if sc.applicable else None
                            for sc in a.scores} for lvl, a in aud.items()},
            "format2_bounds": aud["format2"].package.get("bounds")}
    path = Path("results/benchmarks/privacy_grids.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def day_audit(grid: str, *, day_type: str = "summer_workday") -> dict[str, Any]:
    """``--day-audit GRID``: the attacker holding a day of format-2 packages
    (``flexcore.dso.audit.audit_frames``). Hourly frames: every load's P and Q scaled by
    the normalised load profile of one Bergwald building (load k: building k mod 241;
    Bergwald: its own buildings), PV as in the grid; per frame the format-1 package,
    its format-2 form (``harden``, stable column ids as the co-simulation's pseudonyms),
    the true loads and the bounds from the hardening key."""
    from flexcore.district.daytypes import make_frames
    from flexcore.district.profiles import BuildingProfiles
    from flexcore.dso.audit import audit_frames, bid_loads_mva, binding_bounds
    from flexcore.dso.privacy import harden

    if grid == "bergwald":
        net = load_grid("bergwald")
        bids = synthetic_bids(net, seed=SEED, table=load_building_table())
    else:
        net, bids = grid_case(grid)
    lin = Linearizer(net, bids, salt="bench-privacy")
    prof = BuildingProfiles.from_table(load_building_table(), seed=SEED)
    frames = make_frames(day_types=[day_type], resolution_min=60)
    pf = prof.for_frames(frames)
    nb = len(pf.building_ids)
    pos = {b: k for k, b in enumerate(pf.building_ids)}
    li = np.array([pos.get(str(nm), k % nb) for k, nm in enumerate(net.load.name)])
    p0, q0 = net.load.p_mw.to_numpy(float).copy(), net.load.q_mvar.to_numpy(float).copy()
    shape = pf.load_p_mw[:, li] / np.maximum(pf.load_p_mw[:, li].mean(axis=0), 1e-12)
    sg0 = net.sgen.p_mw.to_numpy(float).copy()
    pkgs, loads, bounds = [], [], []
    try:
        for t in range(len(frames)):
            lin.set_base(load_p_mw=p0 * shape[t], load_q_mvar=q0 * shape[t])
            pkg = lin.linearize((0.0, 0.5, 1.0)).package
            box = bids.subset(pkg.columns)
            hard, key = harden(pkg, lower_mw=box.lower_mw, upper_mw=box.upper_mw,
                               rng=np.random.default_rng(SEED + t))
            pkgs.append(hard)
            loads.append(bid_loads_mva(lin.net, lin.keymap, hard.columns))
            bounds.append(binding_bounds(hard, key, lin.keymap, lin.net))
            print(f"{grid} frame {t} hardened", file=sys.stderr, flush=True)
    finally:
        lin.set_base(load_p_mw=p0, load_q_mvar=q0, sgen_p_mw=sg0 if len(sg0) else None)
    score = audit_frames(pkgs, loads, bounds=bounds)
    out = {"grid": grid, "frames": len(pkgs), "score": score.as_dict(),
           "max_loads_behind_binding_rows": max(b["loads_behind_binding_rows"] for b in bounds),
           "bounds": bounds}
    path = Path(f"results/benchmarks/privacy_day_audit_{grid.replace(':', '_')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None, *, quick: bool = False) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--grids", action="store_true",
                    help="only the single-frame study and audit on SimBench and meshed")
    ap.add_argument("--day", action="store_true",
                    help="only the day of hourly frames (results/benchmarks/privacy_day.json)")
    ap.add_argument("--day-audit", metavar="GRID",
                    help="a day of format-2 packages attacked together (bergwald, meshed or "
                    "a SimBench code)")
    args = ap.parse_args(argv)
    if args.day_audit:
        d = day_audit(args.day_audit)
        print(json.dumps({k: v for k, v in d.items() if k != "bounds"}, indent=1))
        return d
    if args.day:
        d = day(study())
        path = Path("results/benchmarks/privacy_day.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(d, indent=1))
        print(table({"exact_max_deliverable_mw": math.nan, "exact_max_safe": None, "exact": [],
                     "envelopes": [], "audit": {}, "days": [d]}))
        return d
    if args.grids:
        g = grids()
        print(json.dumps(g, indent=1))
        return g
    out = bench(quick=quick or args.quick)
    print(table(out))
    return out


if __name__ == "__main__":
    main()
