"""Split an MV+LV region into DSO areas at its MV/LV transformers.

Rule: a transformer whose low-voltage side is below 1 kV and whose high-voltage side is at
or above 1 kV is an MV/LV transformer. Removing every transformer from the grid graph
(switches respected) leaves connected parts; the part behind an MV/LV transformer's LV bus
is one **LV area**: that transformer plus the LV buses, lines, switches, loads, sgens and
storage behind it. Everything else (MV buses including the transformers' MV buses, the
HV/MV transformers, the ext_grid) is the **MV area**.

- An LV area's private model is a pandapower net holding its LV buses, its transformer and
  the transformer's MV bus, with its own ``ext_grid`` at that MV bus (set point: the AC
  voltage of that bus in the whole region's base-case power flow). Elements of the MV
  bus itself (MV loads, other transformers) stay in the MV area.
- The MV area's model sees each LV area only as one net injection at the transformer's MV
  bus: a load named ``"area <name>"`` with the P and Q that the LV area's own power flow
  draws through its ``ext_grid``.

An LV part reached by two or more MV/LV transformers (meshed LV grids) would need its
injection split between them: refused with a :class:`~flexcore.grid.gridgen.GridError`
naming the transformers.

Voltage limits are per area (level): SimBench's LV 0.90-1.10 p.u. and MV 0.965-1.055 p.u.
(:data:`LV_LIMITS`, :data:`MV_LIMITS`); loadings -100..100 % everywhere.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandapower as pp
import pandapower.topology as top
import pandas as pd

from flexcore.exchange.limits import Limits
from flexcore.grid.gridgen import GridError
from flexcore.grid.grids import run_power_flow
from flexcore.grid.powerflow import PF_OPTIONS

#: SimBench's voltage bands per level (p.u.); loadings -100..100 %
LV_LIMITS = Limits(vm_min_pu=0.90, vm_max_pu=1.10)
MV_LIMITS = Limits(vm_min_pu=0.965, vm_max_pu=1.055)
#: a bus below this nominal voltage is low voltage
LV_KV = 1.0
AREA_LOAD_PREFIX = "area "
#: element tables moved into an LV area with its buses (the ``bus`` column)
_BUS_ELEMENTS = ("load", "sgen", "storage", "shunt", "gen", "ward", "xward", "motor",
                 "asymmetric_load", "asymmetric_sgen")


@dataclass
class LVArea:
    """One LV DSO's private model and where it hangs in the region."""

    name: str                 # "lv<trafo index>"
    trafo: int                # transformer index in the region net
    mv_bus: int               # the transformer's MV bus (the area's slack)
    buses: np.ndarray         # LV buses of the area (region bus indices)
    net: pp.pandapowerNet     # private model with ext_grid at mv_bus
    p_mw: float               # base-case net draw at mv_bus (P through the ext_grid)
    q_mvar: float


@dataclass
class Region:
    """The split of a region: the MV area's model and one LV area per MV/LV transformer."""

    net: pp.pandapowerNet     # the whole region (with its base-case power flow)
    mv_net: pp.pandapowerNet  # the MV DSO's model: LV areas as loads at their MV buses
    areas: list[LVArea]
    mv_limits: Limits = MV_LIMITS
    lv_limits: Limits = LV_LIMITS

    def area(self, name: str) -> LVArea:
        for a in self.areas:
            if a.name == name:
                return a
        raise KeyError(name)


def mvlv_trafos(net: pp.pandapowerNet) -> list[int]:
    """In-service transformers from >= 1 kV to < 1 kV (by their buses' nominal voltages)."""
    if not len(net.trafo):
        return []
    t = net.trafo[net.trafo.in_service.astype(bool)]
    hv_kv = net.bus.vn_kv.loc[t.hv_bus].to_numpy(float)
    lv_kv = net.bus.vn_kv.loc[t.lv_bus].to_numpy(float)
    return [int(i) for i in t.index[(hv_kv >= LV_KV) & (lv_kv < LV_KV)]]


def _parts(net: pp.pandapowerNet) -> dict[int, int]:
    """bus -> connected part without transformers (switches respected)."""
    graph = top.create_nxgraph(net, respect_switches=True, include_trafos=False,
                               include_trafo3ws=False, multi=False)
    part: dict[int, int] = {}
    for k, comp in enumerate(top.connected_components(graph)):
        for b in comp:
            part[int(b)] = k
    return part


def _template(net: pp.pandapowerNet) -> pp.pandapowerNet:
    """``net`` with every element and result table emptied (std_types etc. kept)."""
    empty = {k: v.iloc[0:0] for k, v in net.items() if isinstance(v, pd.DataFrame)}
    full = {k: net[k] for k in empty}
    for k, v in empty.items():
        net[k] = v
    try:
        return copy.deepcopy(net)
    finally:
        for k, v in full.items():
            net[k] = v


def _subnet(net: pp.pandapowerNet, template: pp.pandapowerNet, buses: set[int], *,
            trafos: list[int] | None = None, elements_at: set[int] | None = None
            ) -> pp.pandapowerNet:
    """A copy of ``template`` holding ``buses`` and the branches among them (only
    ``trafos`` if given); bus elements (loads, sgens, ext_grid, ...) only at
    ``elements_at`` (default: every bus). A fast :func:`pandapower.toolbox.select_subnet`
    for one area of a large region."""
    sub = copy.deepcopy(template)
    at = buses if elements_at is None else elements_at
    sub.bus = net.bus.loc[net.bus.index.isin(buses)].copy()
    for table in _BUS_ELEMENTS + ("ext_grid",):
        if table in net and len(net[table]):
            sub[table] = net[table][net[table].bus.isin(at)].copy()
    for table, a, b in (("line", "from_bus", "to_bus"), ("impedance", "from_bus", "to_bus"),
                        ("dcline", "from_bus", "to_bus"), ("trafo", "hv_bus", "lv_bus")):
        if table in net and len(net[table]):
            t = net[table]
            sub[table] = t[t[a].isin(buses) & t[b].isin(buses)].copy()
    if trafos is not None:
        sub.trafo = net.trafo.loc[trafos].copy()
    if len(net.trafo3w):
        t = net.trafo3w
        sub.trafo3w = t[t.hv_bus.isin(buses) & t.mv_bus.isin(buses) & t.lv_bus.isin(buses)]
    if len(net.switch):
        sw = net.switch
        kept = {"b": buses, "l": set(sub.line.index), "t": set(sub.trafo.index),
                "t3": set(sub.trafo3w.index)}
        ok = np.array([bus in buses and elem in kept.get(et, ()) for bus, elem, et in
                       zip(sw.bus.to_numpy(), sw.element.to_numpy(), sw.et.to_numpy())],
                      dtype=bool)
        sub.switch = sw[ok].copy()
    return sub


def _lv_model(net: pp.pandapowerNet, template: pp.pandapowerNet, area_buses: np.ndarray,
              trafo: int, mv_bus: int, name: str) -> pp.pandapowerNet:
    lv = set(area_buses.tolist())
    # the MV bus's own elements (MV loads, ext_grid) belong to the MV area
    sub = _subnet(net, template, lv | {mv_bus}, trafos=[trafo], elements_at=lv)
    vm = float(net.res_bus.vm_pu.at[mv_bus])
    va = float(net.res_bus.va_degree.at[mv_bus])
    pp.create_ext_grid(sub, mv_bus, vm_pu=vm, va_degree=va, name=f"{name} slack")
    sub.name = name
    return sub


def split_region(net: pp.pandapowerNet, *, source: str = "grid",
                 mv_limits: Limits = MV_LIMITS, lv_limits: Limits = LV_LIMITS) -> Region:
    """Split ``net`` (not modified) into the MV area and one LV area per MV/LV transformer.

    Raises GridError naming ``source`` when the grid has no MV/LV transformer, when an LV
    part is fed by several of them, or when a power flow does not converge."""
    net = copy.deepcopy(net)
    trafos = mvlv_trafos(net)
    if not trafos:
        raise GridError(f"{source}: no MV/LV transformer (>= {LV_KV} kV to < {LV_KV} kV): "
                        "nothing to split into DSO areas")
    run_power_flow(net, name=source, **PF_OPTIONS)
    part = _parts(net)
    by_part: dict[int, list[int]] = {}
    for t in trafos:
        by_part.setdefault(part[int(net.trafo.lv_bus.at[t])], []).append(t)
    shared = [ts for ts in by_part.values() if len(ts) > 1]
    if shared:
        raise GridError(f"{source}: transformers {shared[0]} feed one meshed LV grid; an LV "
                        "area must hang on one MV/LV transformer")
    template = _template(net)
    bus_part = np.array([part.get(int(b), -1) for b in net.bus.index])
    areas: list[LVArea] = []
    lv_all: list[np.ndarray] = []
    for t in trafos:
        mv_bus = int(net.trafo.hv_bus.at[t])
        buses = net.bus.index.to_numpy(np.int64)[bus_part == part[int(net.trafo.lv_bus.at[t])]]
        name = f"lv{t}"
        lv = _lv_model(net, template, buses, t, mv_bus, name)
        run_power_flow(lv, name=f"{source}: LV area {name}", **PF_OPTIONS)
        areas.append(LVArea(name, t, mv_bus, buses, lv, float(lv.res_ext_grid.p_mw.iloc[0]),
                            float(lv.res_ext_grid.q_mvar.iloc[0])))
        lv_all.append(buses)
    lv_set = np.concatenate(lv_all)
    mv_buses = np.setdiff1d(net.bus.index.to_numpy(np.int64), lv_set)
    mv = _subnet(net, template, set(mv_buses.tolist()))
    for a in areas:
        pp.create_load(mv, a.mv_bus, p_mw=a.p_mw, q_mvar=a.q_mvar,
                       name=AREA_LOAD_PREFIX + a.name)
    mv.name = f"{source} MV"
    run_power_flow(mv, name=f"{source}: MV area", **PF_OPTIONS)
    return Region(net, mv, areas, mv_limits, lv_limits)
