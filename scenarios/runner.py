"""``flexcosim run SCENARIO.toml``: run a scenario, write a new run folder, print a summary."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from scenarios.config import ConfigError, ScenarioConfig, load_config, parse_slots


def apply_overrides(cfg: ScenarioConfig, *, day_types: str | None = None,
                    frames: str | None = None, warmup_frames: int | None = None
                    ) -> ScenarioConfig:
    """``--day-types a,b``, ``--frames 64-80|68,72`` (slots within a day) and
    ``--warmup-frames N``."""
    from flexcore.district.daytypes import DAY_TYPES, frames_per_day

    changes = {}
    if day_types:
        dts = tuple(d.strip() for d in day_types.split(",") if d.strip())
        bad = [d for d in dts if d not in DAY_TYPES]
        if bad or not dts:
            raise ConfigError(f"--day-types: unknown {bad}; valid: {list(DAY_TYPES)}")
        changes["day_types"] = dts
    if frames:
        changes["slots"] = parse_slots(frames, frames_per_day(cfg.resolution_min), key="--frames")
    if warmup_frames is not None:
        from scenarios.config import check_warmup_frames

        changes["warmup_frames"] = check_warmup_frames(warmup_frames, key="--warmup-frames")
    return dataclasses.replace(cfg, **changes)


def _hhmm(slot: int, resolution_min: int) -> str:
    minutes = slot * resolution_min
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _slots_text(slots, n_day: int) -> str:
    """``"all"`` or ranges such as ``"29,48,68-80"`` (the form parse_slots reads)."""
    slots = sorted(slots)
    if slots == list(range(n_day)):
        return "all"
    parts, start = [], slots[0]
    for a, b in zip(slots, slots[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(parts)


#: the ScenarioConfig fields scenario_document writes (``source``: the file read, a comment)
DOCUMENTED_FIELDS = {"name", "seed", "grid", "buildings", "pv_penetration", "day_types", "slots",
                     "resolution_min", "starter", "package_exchange", "request_default_mw",
                     "request_by_slot", "dso", "objective", "mip_rel_gap", "plots", "extra_load",
                     "fpu", "source", "warmup_frames", "external_units", "calendar", "grid_engine"}


def scenario_document(cfg: ScenarioConfig) -> dict:
    """The resolved config as a scenario TOML document (the inverse of ``parse_config``):
    ``load_config`` of its TOML gives back ``cfg`` (up to ``source``). The request profile is
    written as ``default_mw`` plus one ``[[request.window]]`` per run of equal other values."""
    import warnings

    from flexcore.district.daytypes import frames_per_day

    new = sorted({f.name for f in dataclasses.fields(cfg)} - DOCUMENTED_FIELDS)
    if new:  # a config field added without a line here: the TOML would not reproduce it
        warnings.warn(f"config.resolved.toml leaves out the field(s) {new}", stacklevel=2)

    res = cfg.resolution_min
    n_day = frames_per_day(res)
    windows, prof, s = [], list(cfg.request_by_slot), 0
    while s < n_day:
        e = s + 1
        while e < n_day and prof[e] == prof[s]:
            e += 1
        if prof[s] != cfg.request_default_mw:
            windows.append({"start": _hhmm(s, res), "end": _hhmm(e, res), "mw": prof[s]})
        s = e
    request = {"default_mw": cfg.request_default_mw}
    if windows:
        request["window"] = windows
    doc = {
        "scenario": {"name": cfg.name, "seed": cfg.seed, "grid": cfg.grid,
                     "buildings": cfg.buildings, "pv_penetration": cfg.pv_penetration,
                     "day_types": list(cfg.day_types), "slots": _slots_text(cfg.slots, n_day),
                     "resolution_min": res, "warmup_frames": cfg.warmup_frames},
        "simulation": {"starter": cfg.starter, "package_exchange": cfg.package_exchange},
        "request": request,
        "dso": {**dataclasses.asdict(cfg.dso),
                "operating_points": list(cfg.dso.operating_points)},
        "market": {"objective": cfg.objective, "mip_rel_gap": cfg.mip_rel_gap},
        "results": {"plots": cfg.plots},
        "grid": {"engine": cfg.grid_engine},
    }
    if cfg.extra_load:
        doc["test"] = {"extra_load": [{"frame": f, "mw": mw} for f, mw in cfg.extra_load]}
    if cfg.fpu:
        doc["fpu"] = [dict(u) for u in cfg.fpu]
    if cfg.external_units:
        doc["external_unit"] = [dict(u) for u in cfg.external_units]
    if cfg.calendar is not None:
        doc["calendar"] = dataclasses.asdict(cfg.calendar)
    return doc


def check_scenario(cfg: ScenarioConfig) -> str:
    """``flexcosim run --check``: what a run needs before any simulator starts, without
    running: the grid and its connection points, the building table, the unit classes (the
    TOML itself was validated by ``load_config``). Returns a one-line summary; bad input
    raises a :class:`~flexcore.errors.FlexcosimError` naming it."""
    from flexcore.fpu.registry import parse_fpu_config
    from flexcore.grid.district_grid import building_table, district_net

    net, building_ids = district_net(cfg.grid)[:2]
    table = building_table(cfg.buildings, cfg.grid)
    specs = parse_fpu_config({"fpu": list(cfg.fpu)})
    if cfg.external_units:
        from scenarios.bergwald import check_external_buildings

        check_external_buildings(cfg.external_units, set(table["building_id"].astype(str)))
    frames = (f"{len(cfg.day_types)} day type(s) x {len(cfg.slots)} frame(s)"
              if cfg.calendar is None else f"calendar {cfg.calendar.start[:10]}.."
              f"{cfg.calendar.end[:10]}: {len(cfg.clock())} frame(s)")
    return (f"ok: {cfg.source or cfg.name}: grid {cfg.grid} ({len(net.bus)} buses, "
            f"{len(building_ids)} connection points), {len(table)} buildings, "
            f"{len(specs)} unit class(es), {frames}")


def prune_cancelled_waits() -> None:
    """Work around a mosaik 3.x slow-down that grows with the number of steps (idempotent).

    ``mosaik.progress.Progress`` keeps every waiting future in a list and removes one only
    when its time is reached. The scheduler cancels a wait for the end of the simulation
    each time an event-based simulator is woken by new input, and those cancelled futures
    stay in the list until the end: ~2 more per frame and simulator, each scanned on every
    progress update, so the cost per frame grows linearly (measured: 0.20 s per frame at
    the start of the default run, 0.35 s at its end). Dropping the cancelled futures first
    changes nothing else, since mosaik never resolves a cancelled future.
    """
    from mosaik.progress import Progress

    if getattr(Progress.set, "_flexcosim_prunes", False):
        return
    original = Progress.set

    def set_(self, time):
        self._futures = [(spec, fut) for spec, fut in self._futures if not fut.cancelled()]
        return original(self, time)

    set_._flexcosim_prunes = True
    Progress.set = set_


def fast_tiered_time() -> None:
    """Make mosaik's ``TieredTime + TieredDuration`` and ``<`` cheaper (idempotent).

    The scheduler re-computes every simulator's progress after every step of any
    simulator (``advance_progress``: ~7 simulators x ~12 steps per frame, each adding the
    minimal durations of all triggering ancestors): about 570 additions per frame, which
    took ~8 % of mosaik's own time in the default run through three Python calls each
    (``__add__``, ``tuple_add`` and a generator). This computes the same tuple in one
    expression (the same checks, the same result: ``tiers[:cutoff]`` added elementwise,
    ``tiers[cutoff:]`` appended); tests/test_scenario.py checks it against mosaik's own."""
    import operator

    from mosaik.tiered_time import TieredTime

    if getattr(TieredTime.__add__, "_flexcosim_fast", False):
        return
    new, set_attr, add = object.__new__, object.__setattr__, operator.add

    def __add__(self, interval):
        assert len(self.tiers) == interval.pre_length
        cut, tiers = interval.cutoff, interval.tiers
        out = new(TieredTime)
        set_attr(out, "tiers", tuple(map(add, self.tiers, tiers[:cut])) + tiers[cut:])
        return out

    def __lt__(self, other):
        assert len(self.tiers) == len(other.tiers)
        return self.tiers < other.tiers

    __add__._flexcosim_fast = True
    TieredTime.__add__, TieredTime.__lt__ = __add__, __lt__


def fast_progress_updates() -> None:
    """Make mosaik's progress bookkeeping after every step cheaper (idempotent).

    After each step of any simulator the scheduler calls ``advance_progress`` for every
    simulator: the earliest of its own next step, its current step, the end of the run and,
    for each triggering ancestor, ``MinimalDurations.earliest_sum`` of the ancestor's next
    step (a minimum over sums of tiered times). Most of these inputs are the same as at the
    previous call. Here:

    * ``earliest_sum`` remembers its last argument, durations and answer per distance and
      answers again without adding (recomputed whenever the argument or the set of
      durations differs: the same pure function);
    * ``advance_progress`` takes the same minimum in one pass without building lists, with
      the end of the run (``until`` + the simulator's offset) computed once per simulator;
      with a real-time factor it is mosaik's own.

    The progress set is the same value mosaik computes (min of the same candidates; equal
    candidates are equal tiered times); tests/test_scenario.py compares both on a run."""
    from mosaik import scheduler
    from mosaik.tiered_time import MinimalDurations, TieredTime

    if getattr(scheduler.advance_progress, "_flexcosim_fast", False):
        return
    original = scheduler.advance_progress

    def earliest_sum(self, other):
        durations = tuple(self.durations)
        memo = self.__dict__.get("_flexcosim_memo")
        if memo is not None and memo[0] == other.tiers and memo[1] == durations:
            return memo[2]
        result = min(other + d for d in durations)
        self._flexcosim_memo = (other.tiers, durations, result)
        return result

    ends: dict = {}

    def advance_progress(sim, world):
        if world.rt_factor:
            return original(sim, world)
        key = (world.until, sim.from_world_time)
        best = ends.get(key)
        if best is None:
            best = ends[key] = TieredTime(world.until) + sim.from_world_time
        for pre_sim, distance in sim.triggering_ancestors.items():
            steps = pre_sim.next_steps
            if steps:
                t = distance.earliest_sum(steps[0])
                if t < best:
                    best = t
        if sim.next_steps and sim.next_steps[0] < best:
            best = sim.next_steps[0]
        if sim.current_step and sim.current_step < best:
            best = sim.current_step
        sim.progress.set(best)
        sim.tqdm.update(best.time - sim.tqdm.n)

    advance_progress._flexcosim_fast = True
    advance_progress._flexcosim_original = original
    MinimalDurations.earliest_sum = earliest_sum
    scheduler.advance_progress = advance_progress


#: mosaik minor versions whose scheduler internals :func:`fast_tiered_time` and
#: :func:`fast_progress_updates` replace, checked by tests/test_scenario.py; any other version
#: (setup.cfg allows >=3.4,<3.7) runs mosaik's own code
MOSAIK_PATCHED_VERSIONS = ("3.6.",)


def mosaik_patchable() -> bool:
    """Whether the installed mosaik is one whose scheduler internals the speed-ups were
    checked against (:data:`MOSAIK_PATCHED_VERSIONS`)."""
    from importlib.metadata import version

    return version("mosaik").startswith(MOSAIK_PATCHED_VERSIONS)


#: how long a simulator may take to connect to mosaik and to answer ``init`` (mosaik's
#: ``start_timeout``, default 10 s): a ``cmd`` child imports pandapower, pyomo, ... and took
#: 10-11 s on a loaded machine
START_TIMEOUT_S = 120.0


def new_world(sim_config: dict, *, max_loop_iterations: int = 100):
    """A mosaik World without the start-up logo (``skip_greetings`` where mosaik has it),
    with the scheduler's time arithmetic and progress updates made cheaper
    (:func:`fast_tiered_time`, :func:`fast_progress_updates`), without
    mosaik's INFO lines (:func:`simulators.quiet_mosaik_logging`) and with a start
    timeout of :data:`START_TIMEOUT_S` for the simulator processes."""
    import inspect

    import mosaik

    from simulators import quiet_mosaik_logging

    prune_cancelled_waits()
    if mosaik_patchable():
        fast_tiered_time()
        fast_progress_updates()
    quiet_mosaik_logging()

    params = inspect.signature(mosaik.World).parameters
    extra = {"skip_greetings": True} if "skip_greetings" in params else {}
    return mosaik.World(sim_config, mosaik_config={"start_timeout": START_TIMEOUT_S},
                        debug=False, max_loop_iterations=max_loop_iterations, **extra)


#: how long the simulators get to stop after an interrupted or failed run (:func:`stop_world`)
STOP_TIMEOUT_S = 10.0


def stop_world(world, *, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop the simulators of a run that was interrupted (Ctrl-C) or failed, in at most
    ``timeout_s`` seconds, without a traceback.

    mosaik's ``World.shutdown`` stops every simulator, but after an interruption it can
    wait forever (a simulator's request to mosaik, such as ``get_data`` of a step that
    will never come, is never answered, and mosaik waits for it) or fail (a simulator that
    already ended resets its connection). So the event loop is stopped after
    ``timeout_s``, and such errors and asyncio's complaints about the tasks left behind
    go to the debug log. The caller then raises the interruption; a ``cmd`` simulator
    still running ends with the runner process (:func:`simulators.end_with_parent`)."""
    import logging

    loop = world.loop
    if loop.is_closed():
        return
    loop.set_exception_handler(_quiet_exception_handler)
    timer = loop.call_later(timeout_s, loop.stop)
    try:
        world.shutdown()
    except Exception as exc:  # RuntimeError on the timeout, a reset connection, ...
        logging.getLogger("flexcosim.runner").debug("stopping the simulators: %r", exc)
    finally:
        timer.cancel()


def _quiet_exception_handler(loop, context: dict) -> None:
    """asyncio exception handler after an interrupted run: to the debug log only."""
    import logging

    logging.getLogger("flexcosim.runner").debug("after the interruption: %s",
                                                context.get("message"))


#: the run-folder documentation copied into every run folder (a source checkout has it)
RESULTS_README = Path(__file__).resolve().parents[1] / "results" / "README.md"


def open_run_dir(cfg: ScenarioConfig, *, out: str | Path | None = None) -> Path:
    """A new run folder (never an existing one) with what every run writes before its first
    frame: the resolved scenario (JSON and a runnable TOML), the versions and seed, and the
    run-folder documentation."""
    from flexcore.runs import new_run_dir, versions, write_json, write_toml

    run_dir = new_run_dir("run", out=out).resolve()
    write_json(run_dir / "config.resolved.json", cfg.to_dict())
    write_toml(run_dir / "config.resolved.toml", scenario_document(cfg),
               header=f"flexcosim resolved scenario (from {cfg.source or 'a dict'}); "
                      "a runnable scenario file.\nNone values are left out (TOML has no null).")
    write_json(run_dir / "versions.json", {**versions(), "seed": cfg.seed})
    copy_results_readme(run_dir)
    return run_dir


def copy_results_readme(run_dir: Path) -> None:
    """``results/README.md`` (what every file and column of a run folder means) into the
    run folder, so the folder explains itself; skipped where the file is not shipped."""
    import shutil

    if RESULTS_README.is_file():
        shutil.copyfile(RESULTS_README, run_dir / "README.md")


def run_scenario(cfg: ScenarioConfig, *, out: str | Path | None = None, quiet: bool = True
                 ) -> tuple[Path, dict]:
    """Run the co-simulation; returns (run folder, summary)."""
    import pandas as pd

    from scenarios.bergwald import create_scenario, sim_config
    from scenarios.results import close_open_recorders, read_table, summarize, write_summary

    run_dir = open_run_dir(cfg, out=out)
    t0 = time.perf_counter()
    world = new_world(sim_config(cfg.starter, cfg.external_units))
    try:
        clock = create_scenario(world, cfg, run_dir=run_dir, progress=not quiet)
        world.run(until=clock.until_s, print_progress=False)
    except BaseException:
        # finished frames into Parquet parts (frames.csv has them already), then stop the
        # simulator processes
        close_open_recorders()
        stop_world(world)
        raise
    wall = time.perf_counter() - t0
    frames = read_table(run_dir, "frames")
    flags = pd.read_csv(run_dir / "timeseries" / "unit_flags.csv")
    summary = summarize(frames, wall_time_s=wall, frame_h=clock.frame_h, unit_flags=flags)
    summary["warmup_frames"] = len(clock) - len(frames)
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
                          frames=args.frames, warmup_frames=getattr(args, "warmup_frames", None))
    run_dir, summary = run_scenario(cfg, out=args.out, quiet=args.quiet)
    print(summary_text(summary))
    print(f"run folder: {run_dir}")
    return 0
