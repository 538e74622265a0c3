"""The district's grid as the co-simulation and the DSO use it: one load and one static
generator per building connection point, and the building table that goes with the grid.

Every simulator and agent that needs the district calls these, so all of them see the same
grid preparation (DSO-private: this module is part of the grid layer).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: kWh per year per kW of a SimBench load's p_mw (documented assumption, see building_table)
SIMBENCH_KWH_PER_KW = 1000.0


def building_table(buildings: str, grid: str):
    """The building table: ``"bergwald"`` (shipped), a CSV path, or ``"grid_loads"``.

    ``"grid_loads"`` derives one building per in-service load of the grid (SimBench): id =
    load name, type ``single_house``, ``annual_kwh = p_mw * 1e3 kW * SIMBENCH_KWH_PER_KW h``
    (SimBench's p_mw is a rated value of ~2-14 kW per household), one dwelling, 140 m2 floor
    area, 80 m2 roof (pitched); coordinates 0. The profiles then follow the usual H0 rules.
    """
    import pandas as pd

    from flexcore.district import buildings as district

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

    from flexcore.grid import grids

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


@dataclass(frozen=True)
class Injections:
    """One frame's fixed injections: the load and sgen columns of the whole tables (by
    position) and, per building, ``fix_mw`` = generation (PV + unit baselines) - load."""

    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    sgen_p_mw: np.ndarray
    fix_mw: np.ndarray


class BuildingInjections:
    """Building inputs (MW per building id) -> the grid's fixed injections.

    Building loads and sgens are found by position in their tables (``district_net``'s
    indices); other loads keep the values they have in ``net`` (a SimBench grid may hold
    loads that are no building), other sgens get 0 MW, as in GridSim.
    """

    def __init__(self, net, building_ids, load_idx, sgen_idx) -> None:
        self.building_ids = tuple(building_ids)
        self._pos = {b: k for k, b in enumerate(self.building_ids)}
        self._load_pos = net.load.index.get_indexer(load_idx)
        self._sgen_pos = net.sgen.index.get_indexer(sgen_idx)
        self._n_sgen = len(net.sgen)
        self._load_p0 = net.load["p_mw"].to_numpy(float).copy()
        self._load_q0 = net.load["q_mvar"].to_numpy(float).copy()
        buses = net.load.loc[load_idx, "bus"].to_numpy().tolist()
        self.bus_of = dict(zip(self.building_ids, (int(b) for b in buses)))

    def vector(self, values: Mapping[str, float]) -> np.ndarray:
        """Building id -> MW as an array in building order (absent buildings 0)."""
        out = np.zeros(len(self._pos))
        for b, v in values.items():
            if b not in self._pos:
                from flexcore.grid.gridgen import GridError

                raise GridError(f"unknown building id {b!r}: not a connection point of the "
                                "grid")
            out[self._pos[b]] = v
        return out

    def apply(self, *, p_load_mw: Mapping[str, float], q_load_mvar: Mapping[str, float],
              p_pv_mw: Mapping[str, float], dp_base_mw: Mapping[str, float]) -> Injections:
        """The frame's injections: building loads, and per building sgen = PV + dP_base."""
        load_p, load_q = self._load_p0.copy(), self._load_q0.copy()
        load_p[self._load_pos] = building_p = self.vector(p_load_mw)
        load_q[self._load_pos] = self.vector(q_load_mvar)
        sgen_b = self.vector(p_pv_mw) + self.vector(dp_base_mw)
        sgen = np.zeros(self._n_sgen)
        sgen[self._sgen_pos] = sgen_b
        return Injections(load_p_mw=load_p, load_q_mvar=load_q, sgen_p_mw=sgen,
                          fix_mw=sgen_b - building_p)
