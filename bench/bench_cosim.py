"""Co-simulation throughput: the default scenario on both power-flow engines vs the power flows
alone, measured in one run.

``python bench/bench_cosim.py [--day-types a,b] [--frames 0-95] [--calendar SPAN]
[--engines fast,pandapower] [--baseline CHECKOUT] [--keep-runs DIR]``
(default: the full default scenario, 9 x 96 = 864 frames, on both engines; part of
`flexcosim bench`, one day type with `--quick`). Writes results/benchmarks/cosim.json and
prints it. Measured in the same process, one after the other:

- the scenario (no plots) with ``[grid] engine = "fast"`` and with ``"pandapower"``, each in a
  fresh Python process (so neither inherits the other's caches): the run's wall time
  (start-up of the simulators included, as ``flexcosim run`` reports it), the process's wall
  time (interpreter and imports too) and its CPU time (the fairer figure on a shared
  machine), frames/s, and whether both give the same results (costs to 1e-9 relative,
  delivered energy, statuses, errors);
- ``runpp_loop``: a plain loop of one recycled ``pandapower.runpp`` per frame on the same
  district (building loads and PV of the same frames written into the grid, no units, no
  agents, no mosaik), the limit the issue compares with;
- ``pf_only_cosim``: BuildingSim and GridSim (fast engine) coupled by mosaik over the same
  frames (mosaik's own cost per frame);
- ``parts_cpu_s`` of every run (the baseline's too: the timing wrappers are this file's,
  applied to the checkout's classes): CPU seconds (thread time of the runner process) of
  each simulator's ``create`` and ``step`` (``get_data`` included), of building the
  scenario (``create_scenario``, the simulators' start-up), of ``world.run`` and
  ``mosaik_overhead_cpu_s`` = world.run minus the simulators' steps (the scheduler itself).
  ``starter = "python"`` only (the simulators in the runner process).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flexcore.runs import limit_blas_threads

limit_blas_threads()  # before numpy is imported, as in ``flexcosim run``

from scenarios.bergwald import sim_config  # noqa: E402
from scenarios.config import load_config  # noqa: E402
from scenarios.runner import apply_overrides, new_world, run_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]   #: the checkout this file belongs to

#: frames.parquet columns compared between the engines (absolute tolerances)
COMPARE_ABS = {"delivered_mw": 1e-9, "vm_mae_pu": 1e-8, "vm_max_err_pu": 1e-8,
               "loading_mae_percent": 1e-5, "loading_max_err_percent": 1e-4,
               "vm_min_pu": 1e-8, "vm_max_pu": 1e-8, "loading_max_percent": 1e-4}
COST_RTOL = 1e-9


#: (part, module, class) whose create/step/get_data CPU time a run reports (parts_cpu_s)
PARTS = (("building", "simulators.building_sim", "BuildingSim"),
         ("grid", "simulators.grid_sim", "GridSim"),
         ("fpu", "simulators.fpu_sim", "FPUSim"),
         ("recorder", "scenarios.results", "Recorder"),
         ("dso", "agents.dso_agent", "DSOAgent"),
         ("tso", "agents.tso_agent", "TSOAgent"),
         ("validator", "agents.validator", "Validator"))


def _timed_parts() -> dict[str, float]:
    """Wrap the simulators' methods, ``create_scenario`` and ``World.run`` with thread-time
    counters (in this process); returns the counters, filled while the run goes on."""
    import importlib

    import mosaik

    import scenarios.bergwald as bergwald

    acc: dict[str, float] = {}

    def timed(owner, name: str, label: str) -> None:
        f = getattr(owner, name)

        def w(*args, **kwargs):
            t0 = time.thread_time()
            try:
                return f(*args, **kwargs)
            finally:
                acc[label] = acc.get(label, 0.0) + time.thread_time() - t0

        setattr(owner, name, w)

    for part, module, cls in PARTS:
        c = getattr(importlib.import_module(module), cls)
        timed(c, "create", f"{part}.create")
        timed(c, "step", f"{part}.step")
        timed(c, "get_data", f"{part}.step")
    timed(bergwald, "create_scenario", "create_scenario")
    timed(mosaik.World, "run", "world.run")
    return acc


def _config(scenario: str, day_types: str | None, frames: str | None,
            calendar: str | None = None):
    """The scenario with ``--day-types``, ``--frames`` and ``--calendar SPAN`` (real dates,
    README "Calendar runs"; e.g. a summer week, whose frames publish more often)."""
    cfg = apply_overrides(load_config(scenario), day_types=day_types, frames=frames)
    if calendar:
        from scenarios.config import with_calendar

        cfg = with_calendar(cfg, calendar)
    return cfg


def _one_run(args) -> None:
    """``--one-run ENGINE``: the scenario into ``--run-out`` (no plots) and its parts' CPU
    seconds into ``<run-out>.parts.json``."""
    parts = _timed_parts()
    cfg = _config(args.scenario, args.day_types, args.frames, args.calendar)
    run_scenario(dataclasses.replace(cfg, plots=False, grid_engine=args.one_run),
                 out=args.run_out)
    steps = sum(v for k, v in parts.items() if k.endswith(".step"))
    parts["mosaik_overhead_cpu_s"] = parts.get("world.run", 0.0) - steps
    Path(f"{args.run_out}.parts.json").write_text(json.dumps(
        {k: round(v, 4) for k, v in sorted(parts.items())}, indent=1))


def pf_only(cfg) -> tuple[float, int]:
    """BuildingSim + GridSim (fast engine) over the scenario's frames: (wall s, frames)."""
    clock = cfg.clock()
    t0 = time.perf_counter()
    world = new_world({k: v for k, v in sim_config("python").items()
                       if k in ("BuildingSim", "GridSim")})
    district = world.start("BuildingSim").District(
        grid=cfg.grid, buildings=cfg.buildings, seed=cfg.seed, pv_penetration=cfg.pv_penetration,
        clock=clock.to_dict())
    grid = world.start("GridSim").Grid(grid=cfg.grid, clock=clock.to_dict(), engine="fast")
    world.connect(district, grid, "P_load[MW]", "Q_load[MVAr]", "P_pv[MW]")
    world.run(until=clock.until_s, print_progress=False)
    return time.perf_counter() - t0, len(clock)


def runpp_loop(cfg) -> dict:
    """One recycled ``pp.runpp`` per frame of the scenario on its district (loads and PV of
    the frame written into the grid first, as GridSim did with the pandapower engine); the
    loop is timed, the set-up (grid, profiles) is reported apart."""
    import pandapower as pp

    from flexcore.district.profiles import BuildingProfiles
    from flexcore.grid.district_grid import building_table, district_net
    from flexcore.grid.powerflow import PF_OPTIONS, RECYCLE

    t0 = time.perf_counter()
    clock = cfg.clock()
    net, _, load_idx, sgen_idx = district_net(cfg.grid)
    profiles = BuildingProfiles.from_table(building_table(cfg.buildings, cfg.grid),
                                           seed=cfg.seed, pv_penetration=cfg.pv_penetration)
    data = profiles.for_frames(clock.frames)
    pp.runpp(net, **PF_OPTIONS)
    setup = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    converged = 0
    for k in range(len(clock)):
        net.load.loc[load_idx, "p_mw"] = data.load_p_mw[k]
        net.load.loc[load_idx, "q_mvar"] = data.load_q_mvar[k]
        net.sgen.loc[sgen_idx, "p_mw"] = data.pv_p_mw[k]
        try:
            pp.runpp(net, recycle=RECYCLE, **PF_OPTIONS)
            converged += 1
        except pp.LoadflowNotConverged:
            pass
    loop, loop_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"frames": len(clock), "loop_s": loop, "loop_cpu_s": loop_cpu, "setup_s": setup,
            "converged": converged, "ms_per_runpp": loop / len(clock) * 1e3}


def _children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def compare(fast, ref) -> dict:
    """Same results on both engines? ``fast``/``ref``: frames tables of the two runs."""
    import numpy as np

    cost_f, cost_r = fast["cost_eur_per_h"].to_numpy(float), ref["cost_eur_per_h"].to_numpy(float)
    both = np.isfinite(cost_r) & np.isfinite(cost_f)
    rel = np.abs(cost_f[both] - cost_r[both]) / np.maximum(np.abs(cost_r[both]), 1e-300)
    rel = np.where(cost_r[both] == cost_f[both], 0.0, rel)
    out = {"frames": len(ref),
           "same_status": bool((fast["status"] == ref["status"]).all()),
           "same_rounds": bool((fast["rounds"] == ref["rounds"]).all()),
           "same_nan_costs": bool((np.isfinite(cost_f) == np.isfinite(cost_r)).all()),
           "cost_max_rel_diff": float(rel.max(initial=0.0)),
           "sum_cost_eur_per_h": {"fast": float(np.nansum(cost_f)), "pandapower":
                              float(np.nansum(cost_r))},
           "ac_violations_equal": bool((fast["ac_violations"] == ref["ac_violations"]).all())}
    idx = np.flatnonzero(both)[rel > COST_RTOL]
    out["frames_cost_beyond_rtol"] = [
        {"frame": int(ref["frame"].iloc[k]), "day_type": str(ref["day_type"].iloc[k]),
         "slot": int(ref["slot"].iloc[k]), "request_mw": float(ref["request_mw"].iloc[k]),
         "cost_fast": float(cost_f[k]), "cost_pandapower": float(cost_r[k])} for k in idx]
    worst = {}
    for col in COMPARE_ABS:
        a, b = fast[col].to_numpy(float), ref[col].to_numpy(float)
        same_nan = bool((np.isnan(a) == np.isnan(b)).all())
        ok = ~np.isnan(a) & ~np.isnan(b)
        worst[col] = float(np.abs(a[ok] - b[ok]).max(initial=0.0)) if same_nan else float("inf")
    out["max_abs_diff"] = worst
    out["same_results"] = bool(out["same_status"] and out["same_rounds"] and
                               out["same_nan_costs"] and out["cost_max_rel_diff"] <= COST_RTOL
                               and out["ac_violations_equal"] and
                               all(worst[c] <= tol for c, tol in COMPARE_ABS.items()))
    return out


def bench(*, scenario: str = "scenarios/bergwald.toml", day_types: str | None = None,
          frames: str | None = None, engines: tuple[str, ...] = ("fast", "pandapower"),
          out_path: str | Path = "results/benchmarks/cosim.json",
          baseline: str | Path | None = None, keep_runs: str | Path | None = None,
          calendar: str | None = None) -> dict:
    """Time the scenario on each engine (no plots), the runpp loop and the power-flow-only
    co-simulation of its frames; writes ``out_path`` and returns its content. ``baseline``:
    another checkout of flexcosim (e.g. a worktree of the previous commit) whose fast-engine
    run is timed the same way in the same bench (``runs["baseline"]``), before and after
    side by side; ``fast_vs_baseline`` compares their results. ``keep_runs``: a folder
    (new or empty) that keeps the run folders (``run-<name>``, e.g. for
    ``bench/compare_runs.py``) instead of a temporary one."""
    import os

    import pandas as pd

    from flexcore.runs import versions

    cfg = dataclasses.replace(_config(scenario, day_types, frames, calendar), plots=False)
    runs, tables = {}, {}
    todo = [(e, e, None) for e in engines]
    if baseline is not None:
        todo.append(("baseline", "fast", Path(baseline).resolve()))
    keep = None if keep_runs is None else Path(keep_runs)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            raise SystemExit(f"--keep-runs {keep}: not empty (run folders are never "
                             "overwritten)")
    with (tempfile.TemporaryDirectory() if keep is None
          else contextlib.nullcontext(str(keep))) as tmp:
        for name, engine, checkout in todo:
            run_dir = Path(tmp) / f"run-{name}"
            # this file as a script (its timing wrappers) on the checkout's modules
            cmd = [sys.executable, str(Path(__file__).resolve()), "--scenario",
                   str(Path(scenario).resolve()), "--one-run", engine, "--run-out", str(run_dir)]
            cmd += ["--day-types", day_types] if day_types else []
            cmd += ["--frames", frames] if frames else []
            cmd += ["--calendar", calendar] if calendar else []
            path = os.pathsep.join(x for x in (str(checkout or ROOT),
                                               os.environ.get("PYTHONPATH", "")) if x)
            env = {**os.environ, "PYTHONPATH": path}
            load_before = os.getloadavg()
            t0, c0 = time.perf_counter(), _children_cpu_s()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=checkout, env=env)
            process_s, cpu_s = time.perf_counter() - t0, _children_cpu_s() - c0
            summary = json.loads((run_dir / "summary.json").read_text())
            tables[name] = pd.read_parquet(run_dir / "timeseries" / "frames.parquet")
            n = len(tables[name])
            wall = summary["wall_time_s"]
            parts_file = Path(f"{run_dir}.parts.json")
            runs[name] = {"wall_s": wall, "process_wall_s": process_s,
                            "process_cpu_s": cpu_s, "frames_per_s": n / wall,
                            "load_average_before": load_before,
                            "extrapolated_864_frames_s": wall / n * 864,
                            "dso_time_s": float(tables[name]["dso_time_s"].sum()),
                            "parts_cpu_s": json.loads(parts_file.read_text())
                            if parts_file.is_file() else None,
                            "summary": summary}
    loop = runpp_loop(cfg)
    t_pf, n = pf_only(cfg)
    for r in runs.values():
        r["ratio_to_runpp_loop"] = r["wall_s"] / loop["loop_s"]
        r["cpu_ratio_to_runpp_loop"] = r["process_cpu_s"] / loop["loop_cpu_s"]
        r["ratio_to_pf_only_cosim"] = r["wall_s"] / t_pf
    out = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "machine": versions()["platform"], "scenario": scenario, "calendar": calendar,
           "frames": n, "load_average": os.getloadavg(),
           "runs": runs, "runpp_loop": loop,
           "pf_only_cosim": {"wall_s": t_pf, "frames_per_s": n / t_pf, "engine": "fast"}}
    if "fast" in tables and "pandapower" in tables:
        out["fast_vs_pandapower"] = compare(tables["fast"], tables["pandapower"])
        out["speedup_fast_vs_pandapower"] = runs["pandapower"]["wall_s"] / runs["fast"]["wall_s"]
        out["cpu_speedup_fast_vs_pandapower"] = (runs["pandapower"]["process_cpu_s"]
                                                 / runs["fast"]["process_cpu_s"])
    if "fast" in tables and "baseline" in tables:
        out["fast_vs_baseline"] = compare(tables["fast"], tables["baseline"])
        out["speedup_fast_vs_baseline"] = runs["baseline"]["wall_s"] / runs["fast"]["wall_s"]
        out["cpu_speedup_fast_vs_baseline"] = (runs["baseline"]["process_cpu_s"]
                                               / runs["fast"]["process_cpu_s"])
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None, *, quick: bool = False) -> int:
    """Command line; ``quick`` (from ``flexcosim bench --quick``) times one day type."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="scenarios/bergwald.toml")
    ap.add_argument("--day-types", default="winter_workday" if quick else None)
    ap.add_argument("--frames")
    ap.add_argument("--calendar", metavar="SPAN",
                    help="real dates instead of the representative days, e.g. "
                         "2025-07-07..2025-07-14 (README 'Calendar runs')")
    ap.add_argument("--engines", default="fast,pandapower",
                    help="comma-separated: fast, pandapower (default both)")
    ap.add_argument("--out", default="results/benchmarks/cosim.json")
    ap.add_argument("--baseline", metavar="CHECKOUT",
                    help="another flexcosim checkout (e.g. a worktree of main) timed the same "
                         "way in the same bench: before/after side by side")
    ap.add_argument("--keep-runs", metavar="DIR",
                    help="keep the run folders in DIR (new or empty; e.g. for "
                         "bench/compare_runs.py) instead of a temporary folder")
    ap.add_argument("--one-run", metavar="ENGINE", help=argparse.SUPPRESS)  # internal: one run
    ap.add_argument("--run-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_run:
        _one_run(args)
        return 0
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    out = bench(scenario=args.scenario, day_types=args.day_types, frames=args.frames,
                engines=engines, out_path=args.out, baseline=args.baseline,
                keep_runs=args.keep_runs, calendar=args.calendar)
    print(f"== co-simulation (written to {args.out})")
    print(json.dumps({k: ({e: {x: y for x, y in r.items() if x != "summary"}
                           for e, r in v.items()} if k == "runs" else v)
                      for k, v in out.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
