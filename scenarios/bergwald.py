"""The mosaik wiring of a flexcosim scenario (any grid; the default job is Bergwald).

::

    BuildingSim.District --P_load,Q_load,P_pv--> GridSim.Grid --Vm,loading--> Validator
          |                                         ^                            |
          +---------P_load,Q_load,P_pv----+         | dP                         v
                                          v         |                        Recorder
    +---------------------- world.group() ---------------------------+
    |  FPUSim.Fleet --offers,dP_base--> DSOAgent --to_tso--> TSOAgent  |
    |     ^    \\-----------offers-------------------------^   |  |    |
    |     |                     DSOAgent <---weak: to_dso-------+  |    |
    |     +---------------weak: setpoint[MW]-----------------------+    |
    +-----------------------------------------------------------------+
    TSOAgent --clearing--> Validator, Recorder; DSOAgent --report--> Recorder

Bids travel under per-run pseudonyms issued by FPUSim (the aggregator): the DSO gets the
map pseudonym -> building (``fpu_sim.catalog()``), the Recorder the map pseudonym -> unit
(``fpu_sim.unit_map()``, the private run folder); the TSO only pseudonyms, volumes, prices.

Same-time loops use weak connections inside one group (mosaik 3). One frame clock
(``cfg.clock()``, flexcore.district.clock) is built here and handed to every simulator and
agent as ``clock=clock.to_dict()``: mosaik time = frame index * ``clock.step_s`` over the
concatenated frames of all selected day types, at the scenario's resolution.

External units (``[[external_unit]]``, :func:`start_external_units`): each is a simulator of
its own in the group, wired to a ``Port`` of FPUSim::

    unit --P[MW], offer_up[MW], offer_down[MW], price[EUR/MWh]--> FPUSim.Port
    FPUSim.Port --weak: setpoint[MW]--> unit
"""
from __future__ import annotations

from pathlib import Path

from flexcore.district.clock import FrameClock
from scenarios.config import ConfigError, ScenarioConfig

SIMS = {  # name -> (module, class)
    "BuildingSim": ("simulators.building_sim", "BuildingSim"),
    "FPUSim": ("simulators.fpu_sim", "FPUSim"),
    "GridSim": ("simulators.grid_sim", "GridSim"),
    "DSOAgent": ("agents.dso_agent", "DSOAgent"),
    "TSOAgent": ("agents.tso_agent", "TSOAgent"),
    "Validator": ("agents.validator", "Validator"),
}


def sim_config(starter: str, external_units: tuple[dict, ...] = ()) -> dict:
    """mosaik sim_config: in-process ("python") or separate processes ("cmd"); each
    external unit with its own starter, under :func:`external_sim_name`."""
    cfg = {}
    for name, (module, cls) in SIMS.items():
        cfg[name] = ({"python": f"{module}:{cls}"} if starter == "python"
                     else {"cmd": f"%(python)s -m {module} %(addr)s"})
    cfg["Recorder"] = {"python": "scenarios.results:Recorder"}  # always in the runner process
    for e in external_units:
        cfg[external_sim_name(e)] = {k: e[k] for k in ("python", "cmd") if k in e}
    return cfg


def run_clock(cfg: ScenarioConfig) -> tuple[FrameClock, list[int]]:
    """The clock every simulator runs on and the indices of its warm-up frames.

    Warm-up (``cfg.warmup_frames`` = N): the N slots before the first asked-for slot are
    added to the clock and computed like any frame (requests, clearing, dispatch, power
    flow), but the Recorder records nothing for them. Day-type runs reset the units at the
    start of every day type, so the warm-up is run before the first slot of each day type
    and cannot reach before midnight: N is cut to the first slot (N >= first slot gives the
    states of a run from midnight). Calendar runs carry unit states across days and take no
    warm-up (ConfigError)."""
    asked = cfg.clock()
    if cfg.calendar is not None and cfg.warmup_frames:
        raise ConfigError("warmup_frames: calendar runs carry unit states across days; "
                          "start the calendar earlier instead of a warm-up")
    n = min(int(getattr(cfg, "warmup_frames", 0)), min(cfg.slots))
    if n <= 0:
        return asked, []
    first = min(cfg.slots)
    warm = set(range(first - n, first))
    clock = FrameClock.for_day_types(cfg.day_types, sorted(warm | set(cfg.slots)),
                                     resolution_min=cfg.resolution_min)
    return clock, [f.index for f in clock.frames if f.slot in warm]
def external_sim_name(entry: dict) -> str:
    """The sim_config name of an ``[[external_unit]]``."""
    return f"Ext_{entry['name']}"


def check_external_buildings(entries: tuple[dict, ...], buildings: set[str]) -> None:
    """Every ``[[external_unit]]`` sits at a building of the district (else ConfigError)."""
    for k, e in enumerate(entries):
        if e["building"] not in buildings:
            raise ConfigError(f"[external_unit #{k + 1}] building: {e['building']!r} is not a "
                              "building of the district")


def start_external_units(world, fpu_sim, entries: tuple[dict, ...]) -> list:
    """Start every ``[[external_unit]]`` (call inside the FPUSim's group, before
    ``fpu_sim.catalog()``), create its ``Port`` and connect the two; returns the units."""
    from mosaik.exceptions import ScenarioError

    from simulators.fpu_ports import PORT_INPUTS, REQUIRED_INPUTS

    units = []
    for k, e in enumerate(entries):
        where = f"[external_unit #{k + 1}]"
        try:
            sim = world.start(external_sim_name(e), **e["sim_params"])
        except ScenarioError as exc:   # e.g. a module or class that does not exist
            raise ConfigError(f"{where} {'python' if 'python' in e else 'cmd'}: "
                              f"{' '.join(str(exc).split())}") from None
        model = sim.meta["models"].get(e["model"])
        if model is None:
            raise ConfigError(f"{where} model: {e['model']!r} is not a model of "
                              f"{e.get('python') or e.get('cmd')}: {sorted(sim.meta['models'])}")
        unit = getattr(sim, e["model"])(**e["params"])
        port = fpu_sim.Port(unit_id=e["name"], building=e["building"])
        name = {a: e["attrs"].get(a, a) for a, _ in PORT_INPUTS} | {
            "setpoint[MW]": e["attrs"].get("setpoint[MW]", "setpoint[MW]")}
        missing = [name[a] for a in REQUIRED_INPUTS if name[a] not in model["attrs"]]
        if missing or name["setpoint[MW]"] not in model["attrs"]:
            raise ConfigError(f"{where} model {e['model']!r} lacks the attribute(s) "
                              f"{missing or [name['setpoint[MW]']]} (rename with attrs)")
        if not unit.triggered_by(name["setpoint[MW]"]):
            raise ConfigError(f"{where} model {e['model']!r}: {name['setpoint[MW]']!r} must be "
                              "a trigger attribute (the set-point arrives at the frame's time)")
        world.connect(unit, port, *[(name[a], a) for a, _ in PORT_INPUTS
                                    if name[a] in model["attrs"]])
        world.connect(port, unit, ("setpoint[MW]", name["setpoint[MW]"]), weak=True)
        units.append(unit)
    return units


def create_scenario(world, cfg: ScenarioConfig, *, run_dir: str | Path, progress: bool = False
                    ) -> FrameClock:
    """Start and connect all simulators; returns the run's clock (``world.run(until=
    clock.until_s)``; with warm-up frames, :func:`run_clock`)."""
    run_dir = str(run_dir)
    clock, warmup = run_clock(cfg)
    if cfg.external_units:   # before any simulator starts
        from flexcore.grid.district_grid import building_table

        check_external_buildings(cfg.external_units, set(
            building_table(cfg.buildings, cfg.grid)["building_id"].astype(str)))
    clock_param = clock.to_dict()
    common = dict(grid=cfg.grid, buildings=cfg.buildings, seed=cfg.seed,
                  pv_penetration=cfg.pv_penetration, clock=clock_param)
    district = world.start("BuildingSim").District(**common)
    grid = world.start("GridSim").Grid(grid=cfg.grid, extra_load=[list(e) for e in cfg.extra_load],
                                       clock=clock_param, engine=cfg.grid_engine)
    with world.group():
        fpu_sim = world.start("FPUSim")
        fleet = fpu_sim.Fleet(**common, fpu=list(cfg.fpu))
        start_external_units(world, fpu_sim, cfg.external_units)
        dso = world.start("DSOAgent").DSO(
            grid=cfg.grid, catalog=fpu_sim.catalog(), run_dir=run_dir, seed=cfg.seed,
            dso=cfg.dso.__dict__ | {"operating_points": list(cfg.dso.operating_points)},
            clock=clock_param, exchange=cfg.exchange, engine=cfg.grid_engine)
        tso = world.start("TSOAgent").TSO(
            request_mw=[cfg.request_mw(f.slot) for f in clock.frames], clock=clock_param,
            objective=cfg.objective, mip_rel_gap=cfg.mip_rel_gap)
        world.connect(fleet, dso, "offers", "dP_base[MW]")
        world.connect(fleet, tso, "offers")
        world.connect(dso, tso, ("to_tso", "from_dso"))
        world.connect(tso, dso, ("to_dso", "from_tso"), weak=True)
        world.connect(tso, fleet, "setpoint[MW]", weak=True)
    world.connect(district, dso, "P_load[MW]", "Q_load[MVAr]", "P_pv[MW]")
    world.connect(district, grid, "P_load[MW]", "Q_load[MVAr]", "P_pv[MW]")
    world.connect(fleet, grid, "dP[MW]")
    validator = world.start("Validator").Validator(
        keymap=str(Path(run_dir) / "dso" / "KEYMAP.json"), limits=dict(cfg.dso.limits),
        clock=clock_param)
    world.connect(grid, validator, "Vm[pu]", "loading[%]", "converged")
    world.connect(tso, validator, "clearing")
    world.connect(dso, validator, "report")   # the DSO's predictions (package format 2)
    rec = world.start("Recorder").Recorder(
        run_dir=run_dir, clock=clock_param, progress=progress, tol_vm_mae_pu=cfg.dso.tol_vm_mae_pu,
        tol_loading_mae_percent=cfg.dso.tol_loading_mae_percent,
        bid_units=fpu_sim.unit_map(), grid=cfg.grid, warmup=warmup)
    world.connect(tso, rec, "clearing", "setpoint[MW]")
    world.connect(dso, rec, "report")
    world.connect(fleet, rec, "offers", "clipped", "flagged", "units")
    world.connect(validator, rec, "accuracy")
    world.connect(grid, rec, "Vm[pu]", "loading[%]", "P_slack[MW]")
    return clock
