"""Benchmark AC power flows and sensitivities: pandapower (as today) vs flexcore.grid.fastpf.

Per grid, ``--calls`` seeded random injection sets (loads 0-2x their rated p, PV 0.3x the
load; every fifth set with reverse flow) are solved in turn, each method warm-started from
the previous solution as in the co-simulation's frames:

- ``pandapower``: ``pp.runpp(recycle={"trafo": False, "gen": False, "bus_pq": True},
  numba=False)`` plus ``sensitivity.signed_results`` (what GridSim and the Linearizer do);
- ``pandapower runpp numba``: the same with pandapower's numba Newton (compiled once,
  compilation not timed);
- ``fast-scipy`` / ``fast-klu``: ``FastPowerFlow.run`` with the vectorised SuperLU Newton or
  lightsim2grid's KLU Newton (if installed) on the same internal model;
- sensitivities at each solution for the bid buses (every load bus): ``sensitivity.compute``
  after the pandapower power flow vs ``FastPowerFlow.sensitivities`` after ``run``.

Prints a table of median milliseconds per call (wall and process CPU time: the CPU column is
the fairer one on a shared machine) and ratios to pandapower; no timed asserts. Writes
``results/benchmarks/pf.json``.

    python bench/bench_pf.py [--grids bergwald simbench:1-LV-rural3--0-sw] [--calls 20]
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RECYCLE = {"trafo": False, "gen": False, "bus_pq": True}
DEFAULT_GRIDS = ("bergwald", "simbench:1-LV-rural3--0-sw")


def injection_sets(net, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = np.maximum(net.load.p_mw.to_numpy(float), 1e-3)
    out = []
    for k in range(n):
        load_p = base * rng.uniform(0.0, 2.0, len(base))
        load_q = load_p * rng.uniform(0.0, 0.4, len(base))
        share = 3.0 if k % 5 == 4 else 0.3
        sgen_p = load_p.sum() * share / max(len(net.sgen), 1) * rng.uniform(0.5, 1.5,
                                                                             len(net.sgen))
        out.append((load_p, load_q, sgen_p))
    return out


def _timed(fn, calls):
    """Median wall and CPU milliseconds of ``fn(k)`` over ``calls`` calls (after one warm-up)."""
    fn(0)
    wall, cpu = [], []
    for k in range(calls):
        t_w, t_c = time.perf_counter(), time.process_time()
        fn(k)
        wall.append(time.perf_counter() - t_w)
        cpu.append(time.process_time() - t_c)
    return {"wall_ms": statistics.median(wall) * 1e3, "cpu_ms": statistics.median(cpu) * 1e3}


def bench_grid(name: str, calls: int, engines: list[str], *, numba: bool = True) -> dict:
    import pandapower as pp

    from flexcore.grid import grids, sensitivity
    from flexcore.grid.fastpf import FastPowerFlow

    net = grids.load_grid(name)
    sets = injection_sets(net, calls)
    buses = net.load.bus.to_numpy()
    rows: dict[str, dict] = {}

    work = copy.deepcopy(net)
    pp.runpp(work, numba=False)

    def set_pp(k):
        lp, lq, sg = sets[k % calls]
        work.load["p_mw"], work.load["q_mvar"] = lp, lq
        work.sgen["p_mw"] = sg

    def pp_pf(k):
        set_pp(k)
        pp.runpp(work, recycle=RECYCLE, numba=False)
        return sensitivity.signed_results(work)

    def pp_pf_only(k):
        set_pp(k)
        pp.runpp(work, recycle=RECYCLE, numba=False)

    rows["pandapower runpp (recycled)"] = _timed(pp_pf_only, calls)
    if numba:
        def pp_numba(k):
            set_pp(k)
            pp.runpp(work, recycle=RECYCLE, numba=True)

        pp.runpp(work, numba=True)  # compile (not timed) and rebuild the recycled model
        rows["pandapower runpp numba (recycled)"] = _timed(pp_numba, calls)
        pp.runpp(work, numba=False)
    rows["pandapower runpp + signed_results"] = _timed(pp_pf, calls)
    rows["pandapower sensitivity.compute"] = _timed(
        lambda k: (pp_pf_only(k), sensitivity.compute(work, buses)), calls)
    rows["pandapower sensitivity.compute"]["note"] = "includes the power flow"

    for engine in engines:
        t0 = time.perf_counter()
        fast = FastPowerFlow(net, engine=engine)
        init_s = time.perf_counter() - t0
        rows[f"fast-{engine} run"] = _timed(lambda k, f=fast: f.run(*sets[k % calls]), calls)
        rows[f"fast-{engine} run"]["init_s"] = init_s
        iters = [fast.run(*s).iterations for s in sets]
        rows[f"fast-{engine} run"]["iterations_median"] = float(np.median(iters))
        rows[f"fast-{engine} run + sensitivities"] = _timed(
            lambda k, f=fast: (f.run(*sets[k % calls]), f.sensitivities(buses)), calls)
        rows[f"fast-{engine} run + sensitivities"]["note"] = "includes the power flow"
    base_pf = rows["pandapower runpp + signed_results"]["cpu_ms"]
    base_sens = rows["pandapower sensitivity.compute"]["cpu_ms"]
    for label, r in rows.items():
        base = base_sens if "sensitivit" in label else base_pf
        r["speedup_cpu"] = base / r["cpu_ms"] if r["cpu_ms"] > 0 else float("nan")
    return {"grid": name, "buses": len(net.bus), "injection_buses": len(buses),
            "calls": calls, "rows": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", nargs="+", default=list(DEFAULT_GRIDS))
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--no-numba", action="store_true",
                        help="skip pandapower's numba Newton (saves its ~6 s compilation)")
    parser.add_argument("--out", default="results/benchmarks/pf.json")
    args = parser.parse_args(argv)
    from flexcore.runs import limit_blas_threads

    limit_blas_threads()
    from flexcore.grid.fastpf import klu_available

    engines = ["scipy"] + (["klu"] if klu_available() else [])
    results = [bench_grid(g, args.calls, engines, numba=not args.no_numba) for g in args.grids]
    for res in results:
        print(f"\n{res['grid']}: {res['buses']} buses, {res['injection_buses']} sensitivity "
              f"columns, median of {res['calls']} calls")
        print(f"  {'method':<40} {'wall ms':>9} {'cpu ms':>9} {'x (cpu)':>8}")
        for label, r in res["rows"].items():
            print(f"  {label:<40} {r['wall_ms']:9.2f} {r['cpu_ms']:9.2f} {r['speedup_cpu']:8.1f}")
    try:
        import lightsim2grid
        ls_version = lightsim2grid.__version__
    except ImportError:
        ls_version = None
    import pandapower

    payload = {"benchmark": "pf", "python": platform.python_version(),
               "pandapower": pandapower.__version__, "lightsim2grid": ls_version,
               "engines": engines, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nwritten {out}")
    return payload


if __name__ == "__main__":
    main()
