"""``flexcosim run SCENARIO.toml``: run a scenario, write a new run folder, print a summary."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from scenarios.config import ConfigError, ScenarioConfig, load_config, parse_slots


def apply_overrides(cfg: ScenarioConfig, *, day_types: str | None = None,
                    frames: str | None = None) -> ScenarioConfig:
    """``--day-types a,b`` and ``--frames 64-80|68,72`` (slots within a day)."""
    from flexcore.daytypes import DAY_TYPES, frames_per_day

    changes = {}
    if day_types:
        dts = tuple(d.strip() for d in day_types.split(",") if d.strip())
        bad = [d for d in dts if d not in DAY_TYPES]
        if bad or not dts:
            raise ConfigError(f"--day-types: unknown {bad}; valid: {list(DAY_TYPES)}")
        changes["day_types"] = dts
    if frames:
        changes["slots"] = parse_slots(frames, frames_per_day(cfg.resolution_min), key="--frames")
    return dataclasses.replace(cfg, **changes)


def run_scenario(cfg: ScenarioConfig, *, out: str | Path | None = None, quiet: bool = True
                 ) -> tuple[Path, dict]:
    """Run the co-simulation; returns (run folder, summary)."""
    import mosaik
    import pandas as pd

    from flexcore.runs import new_run_dir, versions, write_json
    from scenarios.bergwald import create_scenario, sim_config
    from scenarios.results import summarize, write_summary

    run_dir = new_run_dir("run", out=out).resolve()
    write_json(run_dir / "config.resolved.json", cfg.to_dict())
    write_json(run_dir / "versions.json", {**versions(), "seed": cfg.seed})
    t0 = time.perf_counter()
    world = mosaik.World(sim_config(cfg.starter), debug=False)
    try:
        n = create_scenario(world, cfg, run_dir=run_dir, progress=not quiet)
        world.run(until=n * 900, print_progress=False)
    except BaseException:
        world.shutdown()  # stop simulator processes; finished frames stay in frames.csv
        raise
    wall = time.perf_counter() - t0
    frames = pd.read_parquet(run_dir / "timeseries" / "frames.parquet")
    summary = summarize(frames, wall_time_s=wall)
    write_summary(run_dir, frames, summary)
    if cfg.plots:
        from scenarios.results import write_plots

        write_plots(run_dir, frames, cfg)
    return run_dir, summary


def run_cli(args) -> int:
    """Entry point of ``flexcosim run`` (args: scenario, day_types, frames, out, quiet)."""
    import logging

    from scenarios.results import summary_text

    logging.getLogger("mosaik").setLevel(logging.WARNING)
    try:
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    except ImportError:
        pass
    cfg = apply_overrides(load_config(args.scenario), day_types=args.day_types,
                          frames=args.frames)
    run_dir, summary = run_scenario(cfg, out=args.out, quiet=args.quiet)
    print(summary_text(summary))
    print(f"run folder: {run_dir}")
    return 0
