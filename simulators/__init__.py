"""Thin mosaik wrappers over flexcore (BuildingSim, FPUSim, GridSim) and their shared setup.

The helpers below are used by every simulator and by the DSO agent so that all of them see
the same district: the same building table, the same profiles (seeded) and the same grid
preparation. Heavy imports happen inside the functions.
"""
from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

STEP_S = 900
"""mosaik seconds per 15-min frame: mosaik time = frame index * STEP_S."""

#: kWh per year per kW of a SimBench load's p_mw (documented assumption, see building_table)
SIMBENCH_KWH_PER_KW = 1000.0


class FrameSimulator(mosaik_api_v3.Simulator):
    """Base of every flexcosim mosaik simulator: ``init`` returns the META given to the
    constructor, ``get_data`` serves the requested attributes from ``self._out`` (what the
    last ``step`` produced; attributes it did not produce are left out)."""

    def __init__(self, meta: dict) -> None:
        super().__init__(meta)
        self._out: dict = {}

    def init(self, sid, time_resolution=1.0, **sim_params):
        return self.meta

    def get_data(self, outputs):
        return {eid: {a: self._out[a] for a in attrs if a in self._out}
                for eid, attrs in outputs.items()}


def meta_from_table(models: dict[str, dict[str, Any]], *, sim_type: str,
                    extra_methods: tuple[str, ...] = ()) -> dict:
    """mosaik META from a compact table ``{model: {"public", "params", "attrs", ...}}``."""
    return {"api_version": "3.0", "type": sim_type, "models": models,
            "extra_methods": list(extra_methods)}


def building_table(buildings: str, grid: str):
    """The building table: ``"bergwald"`` (shipped), a CSV path, or ``"grid_loads"``.

    ``"grid_loads"`` derives one building per in-service load of the grid (SimBench): id =
    load name, type ``single_house``, ``annual_kwh = p_mw * 1e3 kW * SIMBENCH_KWH_PER_KW h``
    (SimBench's p_mw is a rated value of ~2-14 kW per household), one dwelling, 140 m2 floor
    area, 80 m2 roof (pitched); coordinates 0. The profiles then follow the usual H0 rules.
    """
    import pandas as pd

    from flexcore import district

    if buildings == "bergwald":
        return district.load_building_table()
    if buildings == "grid_loads":
        net = district_net(grid)[0]
        loads = net.load[net.load.in_service]
        n = len(loads)
        return pd.DataFrame({
            "building_id": loads["name"].astype(str).to_numpy(),
            "x_m": np.zeros(n), "y_m": np.zeros(n), "type": ["single_house"] * n,
            "dwellings": np.ones(n, int), "floor_area_m2": np.full(n, 140.0),
            "roof_area_m2": np.full(n, 80.0),
            "annual_kwh": np.maximum(loads["p_mw"].to_numpy(float), 1e-4) * 1e3
            * SIMBENCH_KWH_PER_KW,
            "street": [""] * n,
        })
    return district.load_building_table(buildings)


def district_net(grid: str):
    """The DSO's grid prepared for the co-simulation (a fresh object on every call).

    Every building connection point (``flexcore.grids.connection_points``) gets exactly one
    load (its own, named by the building id) and one static generator named by the building
    id at the same bus (created if missing). Other generators of the source grid are set to
    0 MW: all injections come from the building profiles and the units.
    Returns ``(net, building_ids, load_index, sgen_index)``, arrays in building order.
    """
    import pandapower as pp

    from flexcore import grids

    net = grids.load_grid(grid)
    cp = grids.connection_points(net)
    net.sgen["p_mw"] = 0.0
    net.sgen["q_mvar"] = 0.0
    existing = {(str(n), int(b)): int(i) for i, n, b in
                zip(net.sgen.index, net.sgen["name"], net.sgen["bus"])}
    sgens = []
    for bid, bus in zip(cp["building_id"], cp["bus"]):
        idx = existing.get((str(bid), int(bus)))
        if idx is None:
            idx = int(pp.create_sgen(net, int(bus), p_mw=0.0, name=str(bid)))
        sgens.append(idx)
    return net, tuple(cp["building_id"]), cp["load"].to_numpy(), np.array(sgens, dtype=np.int64)


def building_profiles(table, *, seed: int, pv_penetration: float):
    from flexcore.profiles import BuildingProfiles

    return BuildingProfiles.from_table(table, seed=seed, pv_penetration=pv_penetration)


def frames_of(day_types, slots, resolution_min: int = 15):
    from flexcore.daytypes import make_frames

    return make_frames(day_types=list(day_types), slots=list(slots),
                       resolution_min=resolution_min)
