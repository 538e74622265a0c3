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
"""
from __future__ import annotations

from pathlib import Path

from flexcore.district.clock import FrameClock
from scenarios.config import ScenarioConfig

SIMS = {  # name -> (module, class)
    "BuildingSim": ("simulators.building_sim", "BuildingSim"),
    "FPUSim": ("simulators.fpu_sim", "FPUSim"),
    "GridSim": ("simulators.grid_sim", "GridSim"),
    "DSOAgent": ("agents.dso_agent", "DSOAgent"),
    "TSOAgent": ("agents.tso_agent", "TSOAgent"),
    "Validator": ("agents.validator", "Validator"),
}


def sim_config(starter: str) -> dict:
    """mosaik sim_config: in-process ("python") or separate processes ("cmd")."""
    cfg = {}
    for name, (module, cls) in SIMS.items():
        cfg[name] = ({"python": f"{module}:{cls}"} if starter == "python"
                     else {"cmd": f"%(python)s -m {module} %(addr)s"})
    cfg["Recorder"] = {"python": "scenarios.results:Recorder"}  # always in the runner process
    return cfg


def create_scenario(world, cfg: ScenarioConfig, *, run_dir: str | Path, progress: bool = False
                    ) -> FrameClock:
    """Start and connect all simulators; returns the run's clock (``world.run(until=
    clock.until_s)``)."""
    run_dir = str(run_dir)
    clock = cfg.clock()
    clock_param = clock.to_dict()
    common = dict(grid=cfg.grid, buildings=cfg.buildings, seed=cfg.seed,
                  pv_penetration=cfg.pv_penetration, clock=clock_param)
    district = world.start("BuildingSim").District(**common)
    grid = world.start("GridSim").Grid(grid=cfg.grid, extra_load=[list(e) for e in cfg.extra_load],
                                       clock=clock_param, engine=cfg.grid_engine)
    with world.group():
        fpu_sim = world.start("FPUSim")
        fleet = fpu_sim.Fleet(**common, fpu=list(cfg.fpu))
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
        bid_units=fpu_sim.unit_map())
    world.connect(tso, rec, "clearing", "setpoint[MW]")
    world.connect(dso, rec, "report")
    world.connect(fleet, rec, "offers", "clipped", "flagged")
    world.connect(validator, rec, "accuracy")
    world.connect(grid, rec, "Vm[pu]", "loading[%]", "P_slack[MW]")
    return clock
