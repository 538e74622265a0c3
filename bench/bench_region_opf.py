"""The cleared cost of a region against pandapower's AC OPF (:mod:`flexcore.region.opf`),
and the privacy audit of the region's packages (:mod:`flexcore.region.audit`).

For the first ``--areas`` LV areas of the region (seeded bids as in ``scenarios/mvlv.toml``,
the MV package coupled) and each request share, runs the region study (clear, AC check,
refine; :func:`flexcore.region.study.run_region`), then the AC OPF of the same request:

- ``opf``: the ext_grid exchange pinned to what the cleared dispatch delivered there (the
  cleared dispatch is a feasible point of it: the gap is the clearing's suboptimality, or
  the OPF's local optimum when negative);
- ``opf_at_request``: the ext_grid exchange pinned to the request itself (the losses are
  then the OPF's to pay).

The OPF is over the **reduced region** by default: the areas with bids in full, the MV grid,
every other LV area as its fixed base-case draw (``--whole``: the whole region's buses).
Writes ``results/benchmarks/region_opf-<UTC time>.json``; with ``--audit`` also the run
folder ``results/benchmarks/region_audit-<UTC time>/`` (``audit_mv.json``,
``audit_lv.json``).

    python -m bench.bench_region_opf [--areas 10] [--shares 0.2 0.5 0.8] [--whole] [--audit]
        [--day-type winter_workday --frame 72] [--opf-verbose]

``--day-type`` / ``--date`` and ``--frame``: the loads and sgens of one quarter-hour of a
SimBench day (:mod:`flexcore.region.profiles`, as ``flexcosim region`` with ``day_type`` and
``frame``) instead of the grid's static values; ``--opf-verbose``: PIPS prints its
iterations.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import time
from pathlib import Path

from flexcore import runs
from flexcore.errors import FlexcosimError
from flexcore.grid.grids import load_grid
from flexcore.region.audit import write_region_audit
from flexcore.region.opf import opf_gap, region_opf
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region

OUT = Path("results") / "benchmarks"


def _case(region, bids, names, share, total, args) -> dict:
    setup = setup_region(region, bids)    # fresh packages: a run refines them in place
    req = share * total
    t = time.perf_counter()
    try:
        rep = run_region(setup, req, max_rounds=args.max_rounds, mip_rel_gap=args.mip_rel_gap)
    except FlexcosimError as exc:    # e.g. a refinement point rejected by check_bids
        print(f"share {share:.2f}: region run failed: {exc}", flush=True)
        return {"share": share, "request_mw": req, "error": str(exc)}
    t_clear = time.perf_counter() - t
    active = sorted(a.name for a in rep.areas if abs(a.delivered_mw) > 1e-9)
    row = {"share": share, "request_mw": req,
           "cleared": {"status": rep.status, "cost_eur_per_h": rep.cost_eur_per_h,
                       "ac_safe": rep.ac_safe, "rounds": rep.rounds,
                       "delivered_at_interface_mw": rep.delivered_at_interface_mw,
                       "active_areas": active,
                       "points": {a.name: a.point for a in rep.areas if a.name in active},
                       "mv_point": rep.mv.point, "time_s": t_clear}}
    areas = None if args.whole else names
    print(f"share {share:.2f}: cleared {rep.cost_eur_per_h:.3f} EUR/h (AC-safe {rep.ac_safe}, "
          f"rounds {rep.rounds}) in {t_clear:.0f} s; OPF starts", flush=True)
    opf = region_opf(region, bids, req, interface_mw=rep.delivered_at_interface_mw,
                     areas=areas, verbose=args.opf_verbose)
    row["opf"] = opf.as_dict()
    if opf.ok:
        row["gap"] = opf_gap(rep.cost_eur_per_h, opf, bids).as_dict()
    if args.request_pin:
        o2 = region_opf(region, bids, req, areas=areas, verbose=args.opf_verbose)
        row["opf_at_request"] = o2.as_dict()
        if o2.ok:
            row["gap_at_request"] = opf_gap(rep.cost_eur_per_h, o2, bids).as_dict()
    g = row.get("gap", {})
    print(f"share {share:.2f}: request {req:.3f} MW; cleared {rep.cost_eur_per_h:.3f} EUR/h "
          f"(AC-safe {rep.ac_safe}, rounds {rep.rounds}, {len(active)} areas); OPF "
          f"{opf.status} {opf.cost_eur_per_h:.3f} EUR/h ({opf.time_s:.0f} s, feasible "
          f"{opf.check.feasible if opf.check else None}); gap "
          f"{g.get('gap_eur_per_h', float('nan')):.3f} EUR/h "
          f"({g.get('gap_percent', float('nan')):.3f} %), binds {g.get('limits_bind')}",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="simbench:1-MVLV-semiurb-all-0-sw")
    ap.add_argument("--areas", type=int, default=10, help="first N LV areas (0 = all)")
    ap.add_argument("--shares", type=float, nargs="*", default=[0.2, 0.5, 0.8])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-rounds", type=int, default=3)
    ap.add_argument("--mip-rel-gap", type=float, default=1e-6)
    ap.add_argument("--whole", action="store_true", help="OPF over the whole region's buses")
    ap.add_argument("--no-request-pin", dest="request_pin", action="store_false",
                    help="skip the OPF with the exchange pinned to the request")
    ap.add_argument("--day-type", default=None,
                    help="loads of a SimBench day of this BDEW type (flexcore.region.profiles)")
    ap.add_argument("--date", default=None, help="... or of this 2016 date")
    ap.add_argument("--frame", type=int, default=48, help="quarter-hour of that day (0..95)")
    ap.add_argument("--opf-verbose", action="store_const", const=2, default=0,
                    help="PIPS prints its iterations (progress of a long OPF)")
    ap.add_argument("--audit", action="store_true", help="audit the MV and one LV package")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    net = load_grid(args.grid, allow_mvlv=True)
    profile: dict = {"values": "static (the grid's own p_mw / q_mvar)"}
    if args.day_type or args.date:    # one SimBench quarter-hour, as `flexcosim region`
        from flexcore.region.profiles import region_profiles

        rp = region_profiles(net, day_type=args.day_type, date=args.date, seed=args.seed,
                             source=args.grid)
        rp.apply(net, args.frame)
        profile = {"date": rp.date.isoformat(), "day_type": rp.day_type, "frame": args.frame,
                   "start": str(rp.timestamps[args.frame]),
                   **{k: float(v) for k, v in rp.totals_mw().iloc[args.frame].items()}}
        print(f"frame {args.frame} of {rp.date} ({rp.day_type}): load "
              f"{profile['load_p_mw']:.2f} MW, sgen {profile['sgen_p_mw']:.2f} MW", flush=True)
    region = split_region(net, source=args.grid)
    names = [a.name for a in region.areas]
    names = names[:args.areas] if args.areas else names
    bids = region_bids(region, seed=args.seed, areas=names)
    names = list(bids)
    total = float(sum(b.volume_mw.sum() for b in bids.values()))
    print(f"{args.grid}: {len(names)} LV areas with bids ({total:.2f} MW), split "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: dict = {"grid": args.grid, "areas": len(names), "seed": args.seed,
                 "bid_total_mw": total, "opf_model": "whole region" if args.whole else
                 "reduced: areas with bids + MV, other areas as fixed base draws",
                 "mip_rel_gap": args.mip_rel_gap, "profile": profile, "cases": []}
    path = OUT / f"region_opf-{stamp}.json"
    for share in args.shares:
        out["cases"].append(_case(region, bids, names, share, total, args))
        runs.write_json(path, out)       # after every case: a crash keeps what was done
    if args.audit:
        folder = runs.new_run_dir("region_audit", out=OUT / f"region_audit-{stamp}")
        res = write_region_audit(setup_region(region, bids), folder)
        out["audit"] = {"folder": str(folder), **res.summary()}
        print(f"audit: {res.summary()}", flush=True)
    out["versions"] = runs.versions()
    runs.write_json(path, out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
