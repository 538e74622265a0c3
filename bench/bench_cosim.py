"""Co-simulation throughput: the default scenario vs a power-flow-only co-simulation.

``python bench/bench_cosim.py [--day-types a,b] [--frames 0-95]`` (default: the full default
scenario, 9 x 96 = 864 frames; part of `flexcosim bench`, one day type with `--quick`).
Writes results/benchmarks/cosim.json and prints it.
The power-flow-only run couples BuildingSim and GridSim of the same district (no FPUs, no
agents) over the same frames.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from flexcore.runs import limit_blas_threads

limit_blas_threads()  # before numpy is imported, as in ``flexcosim run``

from scenarios.bergwald import sim_config  # noqa: E402
from scenarios.config import load_config  # noqa: E402
from scenarios.runner import apply_overrides, new_world, run_scenario  # noqa: E402


def pf_only(cfg) -> tuple[float, int]:
    clock = cfg.clock()
    t0 = time.perf_counter()
    world = new_world({k: v for k, v in sim_config("python").items()
                       if k in ("BuildingSim", "GridSim")})
    district = world.start("BuildingSim").District(
        grid=cfg.grid, buildings=cfg.buildings, seed=cfg.seed, pv_penetration=cfg.pv_penetration,
        clock=clock.to_dict())
    grid = world.start("GridSim").Grid(grid=cfg.grid, clock=clock.to_dict())
    world.connect(district, grid, "P_load[MW]", "Q_load[MVAr]", "P_pv[MW]")
    world.run(until=clock.until_s, print_progress=False)
    return time.perf_counter() - t0, len(clock)


def bench(*, scenario: str = "scenarios/bergwald.toml", day_types: str | None = None,
          frames: str | None = None) -> dict:
    """Time the scenario (no plots) and the power-flow-only co-simulation of its frames;
    writes results/benchmarks/cosim.json and returns its content."""
    from flexcore.runs import versions

    cfg = apply_overrides(load_config(scenario), day_types=day_types, frames=frames)
    cfg = dataclasses.replace(cfg, plots=False)
    with tempfile.TemporaryDirectory() as tmp:
        _, summary = run_scenario(cfg, out=Path(tmp) / "run")
    t_pf, n = pf_only(cfg)
    full = summary["wall_time_s"]
    out = {"measured_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "machine": versions()["platform"], "scenario": scenario, "frames": n,
           "cosim_wall_s": full,
           "cosim_frames_per_s": n / full, "pf_only_wall_s": t_pf,
           "pf_only_frames_per_s": n / t_pf, "ratio_cosim_to_pf_only": full / t_pf,
           "extrapolated_864_frames_s": full / n * 864, "summary": summary}
    path = Path("results/benchmarks/cosim.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None, *, quick: bool = False) -> int:
    """Command line; ``quick`` (from ``flexcosim bench --quick``) times one day type."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="scenarios/bergwald.toml")
    ap.add_argument("--day-types", default="winter_workday" if quick else None)
    ap.add_argument("--frames")
    args = ap.parse_args(argv)
    out = bench(scenario=args.scenario, day_types=args.day_types, frames=args.frames)
    print("== co-simulation (written to results/benchmarks/cosim.json)")
    print(json.dumps({k: v for k, v in out.items() if k != "summary"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
