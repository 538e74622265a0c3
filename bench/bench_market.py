"""Benchmark the clearing backends on a synthetic package of realistic size.

A random radial feeder (``--buses`` buses, one transformer) with ``--bids`` houses gives
voltage rows (every bus) and loading rows (every line + transformer) with linear
(DistFlow-like) sensitivities, perturbed per operating point to mimic AC slopes. Operating
points are at activation fractions 1 .. 0 (m = 1, 3, 5, 9). Times are build and solve
seconds (median of ``--repeat`` runs) for pyomo and the direct highspy backend (regions and
full MILP). Writes ``results/benchmarks/market.json``.

    python bench/bench_market.py [--bids 241] [--buses 480] [--request 1.8] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from flexcore.exchange.bids import BidTable
from flexcore.exchange.package import PointInfo, SensitivityPackage
from flexcore.market import clear


def synthetic_package(n_bids: int = 241, n_buses: int = 480, m: int = 3, seed: int = 0
                      ) -> tuple[SensitivityPackage, BidTable]:
    """A plausible dense package and bid table (see the module docstring)."""
    rng = np.random.default_rng(seed)
    parent = np.r_[-1, [rng.integers(max(0, k - 40), k) for k in range(1, n_buses + 1)]]
    nb = n_buses + 1                      # bus 0 = LV side of the transformer
    r_line = rng.uniform(0.005, 0.03, nb)  # p.u. voltage drop per MW on the line into bus k
    anc = np.zeros((nb, nb), bool)        # anc[k, a]: a is on the path root..k (inclusive)
    for k in range(nb):
        a = k
        while a > 0:
            anc[k, a] = True
            a = parent[a]
    house = rng.choice(np.arange(1, nb), n_bids, replace=False)
    # dV_b/dP_h = sum of r over lines common to both paths; dFlow_line_k/dP_h = -1 if h below k
    common = (anc[:, None, :] & anc[None, house, :]).astype(float) @ r_line   # (nb, n)
    below = anc[house].T.astype(float)                                       # (nb line, n)
    vol = rng.uniform(0.004, 0.02, n_bids) * np.where(rng.random(n_bids) < 0.85, 1.0, -1.0)
    price = rng.uniform(30.0, 250.0, n_bids)
    p_fix = -rng.uniform(0.001, 0.004, n_bids)
    frac = np.linspace(1.0, 0.0, m) if m > 1 else np.array([0.5])
    p_flex = frac[:, None] * np.maximum(vol, 0.0)[None, :]
    flows = -(p_fix[None, :] + p_flex) @ below.T                  # (m, nb) MW, + downstream
    # scale the resistances so that activating every bid moves voltages by up to ~0.06 p.u.
    full = common @ (p_fix + np.maximum(vol, 0.0))
    common *= 0.06 / max(np.abs(full).max(), 1e-9)
    flow_all = -(p_fix + np.maximum(vol, 0.0)) @ below.T
    flow_none = -p_fix @ below.T
    rating = np.maximum.reduce([np.abs(flow_all) * rng.uniform(0.7, 1.5, nb),
                                1.2 * np.abs(flow_none), np.full(nb, 0.02)])
    vm_rows, ld_rows = np.arange(1, nb), np.arange(nb)
    vm, ld, vtdf, ltdf = [], [], [], []
    for i in range(m):
        inj = p_fix + p_flex[i]
        noise = 1.0 + 0.02 * rng.standard_normal((2, nb, n_bids))
        vm.append(1.0 + common[vm_rows] @ inj)
        vtdf.append((common * noise[0])[vm_rows])
        ld.append(100.0 * flows[i][ld_rows] / rating[ld_rows])
        ltdf.append((-100.0 * below / rating[:, None] * noise[1])[ld_rows])
    ids = [f"bid{k:03d}" for k in range(n_bids)]
    pkg = SensitivityPackage(
        columns=ids, vm_rows=[f"v{k}" for k in vm_rows], loading_rows=[f"l{k}" for k in ld_rows],
        points=[PointInfo(f"a{f:.3g}", float(f)) for f in frac], p_flex_mw=p_flex,
        vm_pu=np.array(vm), loading_percent=np.array(ld), vtdf=np.array(vtdf),
        ltdf=np.array(ltdf))
    return pkg, BidTable(ids=tuple(ids), volume_mw=vol, price_eur_per_mwh=price)


def _time(fn, repeat: int) -> tuple[dict, object]:
    builds, solves, totals, res = [], [], [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        totals.append(time.perf_counter() - t0)
        builds.append(res.build_time_s)
        solves.append(res.solve_time_s)
    return {"build_s": statistics.median(builds), "solve_s": statistics.median(solves),
            "total_s": statistics.median(totals)}, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bids", type=int, default=241)
    ap.add_argument("--buses", type=int, default=480)
    ap.add_argument("--request", type=float, default=1.8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--points", type=int, nargs="+", default=[1, 3, 5, 9])
    ap.add_argument("--out", default="results/benchmarks/market.json")
    args = ap.parse_args()
    clear(*synthetic_package(20, 30, 2), 0.05, backend="pyomo")   # warm up imports
    runs = []
    for m in args.points:
        pkg, bids = synthetic_package(args.bids, args.buses, m)
        rows = len(pkg.vm_rows) + len(pkg.loading_rows)
        cases = {
            "direct/regions": partial(clear, pkg, bids, args.request, method="regions"),
            "direct/milp": partial(clear, pkg, bids, args.request, method="milp"),
            "direct/milp-noprefilter": partial(clear, pkg, bids, args.request, method="milp",
                                               prefilter=False),
            "pyomo": partial(clear, pkg, bids, args.request, backend="pyomo"),
        }
        for name, fn in cases.items():
            t, res = _time(fn, 1 if "pyomo" in name or "noprefilter" in name else args.repeat)
            rec = {"m": m, "case": name, "bids": pkg.n, "rows_per_point": rows, **t,
                   "status": res.status, "objective": res.objective,
                   "operating_point": res.operating_point_label}
            runs.append(rec)
            print(f"m={m} {name:24s} build {t['build_s']:.3f}s solve {t['solve_s']:.3f}s "
                  f"total {t['total_s']:.3f}s  {res.status} obj={res.objective}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"request_mw": args.request, "machine": platform.platform(),
                               "python": platform.python_version(), "runs": runs}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
