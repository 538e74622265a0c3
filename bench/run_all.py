"""Performance figures of flexcosim on the Bergwald district, in one run (``flexcosim bench``).

- sensitivities: all m = 3 sensitivity sets by the Jacobian path vs by finite differences
  (forward differences, n + 1 power flows per point), measured in the same run;
- package: size on disk with and without screening, rows kept;
- market: build and solve times for m = 1, 3, 5, 9, direct highspy vs pyomo, with and
  without screening, and whether both find the same optimum;
- power flows: ``bench/bench_pf.py`` (the fast path vs ``pandapower.runpp`` per power flow
  and per sensitivity set);
- co-simulation: ``bench/bench_cosim.py`` (frames per second on both engines vs a loop of
  recycled ``runpp`` calls and a power-flow-only co-simulation);
- sweep: ``bench/bench_sweep.py`` (the same points on 2 Dask workers vs 1);
- calendar: ``bench/bench_calendar.py`` (a calendar month, one day with ``--quick``:
  frames/s, the year extrapolated, peak RSS and size on disk);
- recorder: ``bench/bench_recorder.py`` (recording cost per frame, buffered vs every frame).

Each part prints a table and writes ``results/benchmarks/<part>.json``. ``--quick`` does
fewer repetitions and finite differences on one point only (extrapolated, and labelled so).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from flexcore import runs
from flexcore.district.buildings import load_building_table
from flexcore.dso import Linearizer
from flexcore.exchange.package import save_package, screen
from flexcore.grid import grids
from flexcore.grid.sensitivity import finite_differences
from flexcore.market import clear
from flexcore.study.bidgen import synthetic_bids

OUT = Path("results") / "benchmarks"
REQUEST_MW = 1.8


def _setup(seed: int = 1):
    net = grids.load_grid("bergwald")
    bids = synthetic_bids(net, seed=seed, table=load_building_table())
    return net, bids, Linearizer(net, bids, salt="bench")


def _median_time(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_sensitivities(*, quick: bool = False) -> dict:
    net, bids, lin = _setup()
    lin.linearize((0.0,))  # warm-up (numba compilation of the power flow)
    t_jac, rep = _median_time(lambda: lin.linearize((0.0, 0.5, 1.0)), 3 if quick else 5)
    buses = bids.bus
    t0 = time.perf_counter()
    n_points = 1 if quick else 3
    max_err_v = max_err_l = 0.0
    for a in (0.0, 0.5, 1.0)[:n_points]:
        lin.apply(a * bids.volume_mw)
        fd_v, fd_l = finite_differences(lin.net, buses, h_mw=1e-4, central=False,
                                        tolerance_mva=1e-8)
        lin.invalidate()  # the FD power flows ran on lin.net
        pt = lin.point(a * bids.volume_mw, label="check")
        vm_rows = lin.row_positions.vm
        max_err_v = max(max_err_v, float(np.abs(fd_v[vm_rows] - pt.vtdf).max()))
        loading_rows = lin.row_positions.loading
        max_err_l = max(max_err_l, float(np.abs(fd_l[loading_rows] - pt.ltdf).max()))
    t_fd = (time.perf_counter() - t0) * (3 / n_points)
    res = {
        "grid": "bergwald", "columns": int(len(bids)), "points": 3,
        "jacobian_s": t_jac, "finite_differences_s": t_fd,
        "finite_differences_extrapolated_from_points": n_points,
        "speedup": t_fd / t_jac,
        "fd_vs_jacobian_max_abs_vtdf_diff_pu_per_mw": max_err_v,
        "fd_vs_jacobian_max_abs_ltdf_diff_percent_per_mw": max_err_l,
    }
    _report("sensitivities", res)
    return res


def bench_package(*, quick: bool = False) -> dict:
    _, bids, lin = _setup()
    rep = lin.linearize((0.0, 0.5, 1.0))
    pkg = rep.package
    screened, sr = screen(pkg, lower_mw=bids.lower_mw, upper_mw=bids.upper_mw)
    with tempfile.TemporaryDirectory() as tmp:
        full = _folder_size(save_package(pkg, Path(tmp) / "full"))
        small = _folder_size(save_package(screened, Path(tmp) / "screened"))
    res = {"rows_total": len(pkg.vm_rows) + len(pkg.loading_rows),
           "vm_rows_kept": sr.vm_rows_kept, "vm_rows_total": sr.vm_rows_total,
           "loading_rows_kept": sr.loading_rows_kept, "loading_rows_total": sr.loading_rows_total,
           "bytes_full": full, "bytes_screened": small}
    _report("package", res)
    return res


def bench_market(*, quick: bool = False) -> dict:
    _, bids, lin = _setup()
    tso_bids = bids.without_bus()
    rows = []
    for m in (1, 3, 5, 9):
        fractions = (0.0,) if m == 1 else tuple(np.linspace(0.0, 1.0, m))
        pkg = lin.linearize(fractions).package
        for screened in (False, True):
            p = pkg if not screened else screen(pkg, lower_mw=bids.lower_mw,
                                                upper_mw=bids.upper_mw)[0]
            row = {"m": m, "screened": screened,
                   "rows": len(p.vm_rows) + len(p.loading_rows)}
            for backend in ("direct", "pyomo"):
                if backend == "pyomo" and quick and m > 3:
                    continue
                t, r = _median_time(partial(clear, p, tso_bids, REQUEST_MW, backend=backend),
                                    1 if backend == "pyomo" else (3 if quick else 5))
                row[f"{backend}_status"] = r.status
                row[f"{backend}_build_s"] = r.build_time_s
                row[f"{backend}_solve_s"] = r.solve_time_s
                row[f"{backend}_total_s"] = t
                row[f"{backend}_cost_eur_per_h"] = r.cost_eur_per_h
            if "pyomo_cost_eur_per_h" in row and row["direct_status"] == "optimal":
                pyo, direct = row["pyomo_cost_eur_per_h"], row["direct_cost_eur_per_h"]
                row["same_optimum"] = bool(abs(pyo - direct) <= 1e-6 * max(1.0, abs(direct)))
            rows.append(row)
    res = {"request_mw": REQUEST_MW, "bids": len(bids), "runs": rows}
    _report("market", res)
    return res


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir())


def _report(name: str, res: dict) -> None:
    res = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "machine": runs.versions()["platform"], **res}
    runs.write_json(OUT / f"{name}.json", res)
    print(f"== {name} (written to {OUT / (name + '.json')})")
    for k, v in res.items():
        if k == "runs":
            keys = list(v[0])
            print("  " + " | ".join(keys))
            for r in v:
                print("  " + " | ".join(_fmt(r.get(c)) for c in keys))
        else:
            print(f"  {k}: {_fmt(v)}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main(*, quick: bool = False) -> int:
    bench_sensitivities(quick=quick)
    bench_package(quick=quick)
    bench_market(quick=quick)
    from bench import bench_cosim, bench_pf

    bench_pf.main(["--no-numba"] + (["--calls", "10"] if quick else []))
    bench_cosim.main([], quick=quick)
    from bench import bench_sweep

    bench_sweep.main([], quick=quick)
    from bench import bench_calendar, bench_recorder

    bench_calendar.main([], quick=quick)
    bench_recorder.main(96 if not quick else 32)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    raise SystemExit(main(quick=ap.parse_args().quick))
