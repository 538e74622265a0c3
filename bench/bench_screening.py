"""Exact format-2 screening per published package in the co-simulation (issue 16 budget).

``python bench/bench_screening.py [--frames 68-76] [--day-type winter_workday] [--reference]``
``python bench/bench_screening.py --cosim [--cosim-frames 64-80] [--day-types a,b]``

``--cosim``: the default co-simulation (scenarios/bergwald.toml, all 864 frames unless
restricted) run twice one after the other on this machine, ``[dso] privacy = "exact"``
(format 2, the default: the TSO announces the request, the DSO publishes the rows of that
request) and ``"full"`` (format 1): wall time of each run, per-frame equality of status,
dispatch, rounds, delivered and cost (largest relative cost difference), and what the DSO
published (``dso/audit.json`` ``publications``: packages, frames without one, seconds and
rows per package). Writes ``results/benchmarks/cosim_privacy.json``.

``--balance``: per point of the round-0 packages of ``--frames``, the sides the box bound
keeps and those the exact bound over box ∩ ``sum x = request`` keeps
(:func:`flexcore.dso.privacy.balance_max`, the frame's request from the scenario); writes
``results/benchmarks/screening_balance.json``.

Without ``--cosim`` / ``--balance``: the LP screening of ``privacy = "exact"`` with ``exact_rows =
"screened"``.

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
        frames.open_frame(k, p_load_mw=b["P_load[MW]"], q_load_mvar=b["Q_load[MVAr]"],
                          p_pv_mw=b["P_pv[MW]"], dp_base_mw=o["dP_base[MW]"],
                          offers=o["offers"])
        package = frames.session.published()   # the round-0 package (solver margin)
        box = lin.bids.subset(package.columns)
        out.append((slots[k], package, box.lower_mw, box.upper_mw,
                    frames.report["relinearized"]))
    return out


def _cosim_run(privacy: str, out: Path, day_types: str | None, frames: str | None) -> dict:
    """One co-simulation run in a fresh process; its wall time and frames.csv."""
    import subprocess
    import sys
    import tempfile

    import pandas as pd

    text = Path("scenarios/bergwald.toml").read_text()
    assert 'privacy = "exact"' in text
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / f"bergwald_{privacy}.toml"
        toml.write_text(text.replace('privacy = "exact"', f'privacy = "{privacy}"', 1))
        cmd = [sys.executable, "-m", "scenarios.cli", "run", str(toml), "--quiet",
               "--out", str(out)]
        cmd += ["--day-types", day_types] if day_types else []
        cmd += ["--frames", frames] if frames else []
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    audit = json.loads((out / "dso" / "audit.json").read_text())
    return {"wall_time_s": wall, "frames": pd.read_csv(out / "frames.csv"),
            "publications": audit.get("publications", {}),
            "audits": {k: {"frame": v["frame"], "package": v["package"]}
                       for k, v in audit["audits"].items()}}


def balance(args: argparse.Namespace, slots: list[int]) -> None:
    cfg = load_config("scenarios/bergwald.toml")
    rows = []
    for slot, pkg, lo, hi, _ in packages(args.day_type, slots):
        req = cfg.request_mw(slot)
        for i in range(pkg.m):
            a_raw, c, _ = privacy._sides(pkg, i)
            a, rhs, _ = privacy.normalise_sides(a_raw, c)
            centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
            tol = 1e-9 * (1 + np.abs(rhs))
            box = a @ centre + np.abs(a) @ half > rhs + tol
            _, first, group = np.unique(a[box].T, axis=0, return_index=True,
                                        return_inverse=True)
            group = np.asarray(group).ravel()
            glo = np.bincount(group, weights=lo, minlength=len(first))
            ghi = np.bincount(group, weights=hi, minlength=len(first))
            t0 = time.perf_counter()
            bmax = privacy.balance_max(a[box][:, first], glo, ghi, req)
            dt = time.perf_counter() - t0
            rec = {"slot": slot, "request_mw": req, "point": i, "sides": len(rhs),
                   "after_box": int(box.sum()), "groups": len(first),
                   "after_balance": int((bmax > rhs[box] + tol[box]).sum()), "time_s": dt}
            print(json.dumps(rec), flush=True)
            rows.append(rec)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "screening_balance.json").write_text(json.dumps(
        {"day_type": args.day_type, "points": rows}, indent=1))
    print(f"-> {OUT / 'screening_balance.json'}")


def cosim(args: argparse.Namespace) -> None:
    import tempfile

    import numpy as np

    base = Path(tempfile.mkdtemp(prefix="bench_cosim_privacy_"))
    runs = {p: _cosim_run(p, base / p, args.day_types, args.cosim_frames)
            for p in ("exact", "full")}
    f2, f1 = runs["exact"]["frames"], runs["full"]["frames"]
    same = {c: bool((f1[c].fillna("") == f2[c].fillna("")).all())
            for c in ("status", "dispatched", "rounds", "request_mw")}
    c1, c2 = f1["cost_eur_per_h"].to_numpy(float), f2["cost_eur_per_h"].to_numpy(float)
    rel = np.abs(c2 - c1) / np.maximum(np.abs(c1), 1e-9)
    out = {
        "frames": len(f1), "runs_folder": str(base),
        "wall_time_s": {p: r["wall_time_s"] for p, r in runs.items()},
        "wall_time_ratio_exact_over_full": runs["exact"]["wall_time_s"]
        / runs["full"]["wall_time_s"],
        "dso_time_s_total": {p: float(r["frames"]["dso_time_s"].sum())
                             for p, r in runs.items()},
        "same": same,
        "max_rel_cost_diff": float(np.nanmax(rel)) if len(rel) else 0.0,
        "max_abs_delivered_diff_mw": float(np.nanmax(np.abs(
            f2["delivered_mw"].to_numpy(float) - f1["delivered_mw"].to_numpy(float)))),
        "total_cost_eur": {p: float(r["frames"]["cost_eur_per_h"].sum()) / 4
                           for p, r in runs.items()},
        "publications": {p: r["publications"] for p, r in runs.items()},
        "audits": {p: r["audits"] for p, r in runs.items()},
    }
    print(json.dumps(out, indent=1))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cosim_privacy.json").write_text(json.dumps(out, indent=1))
    print(f"-> {OUT / 'cosim_privacy.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--day-type", default="winter_workday")
    ap.add_argument("--frames", default="68-76", help="slots of the day, e.g. 68-76")
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--cosim", action="store_true",
                    help="the default co-simulation in format 2 and format 1, side by side")
    ap.add_argument("--cosim-frames", default=None, help="--frames of both runs (default all)")
    ap.add_argument("--day-types", default=None, help="--day-types of both runs")
    ap.add_argument("--balance", action="store_true",
                    help="box bound against the bound with the request's balance")
    args = ap.parse_args()
    if args.cosim:
        cosim(args)
        return
    if "," in args.frames:
        slots = [int(x) for x in args.frames.split(",")]
    else:
        a, _, b = args.frames.partition("-")
        slots = list(range(int(a), int(b or a) + 1))
    if args.balance:
        balance(args, slots)
        return
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
        a_n, rhs_n, _ = privacy.normalise_sides(a_raw, c)
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
