"""The AC OPF reference of a region study: pandapower's AC OPF (PIPS) of the whole region
(or of a reduced region, below), against which the cleared cost is compared.

The OPF model follows :func:`flexcore.study.baselines.ac_opf` (one LV district) on the
region's grid:

- every bid of every LV area is a controllable sgen at its bus, ``0 <= p <= volume``
  (downward bids ``volume <= p <= 0``), ``q = 0``, linear cost ``price x |p|``; every other
  element is fixed;
- the request is a constraint on the exchange at the region's ext_grid: its active power is
  pinned to ``P_ext,0 - D`` with ``D = P_E`` or, for the cost comparison
  (:func:`opf_gap`), ``D`` = what the clearing's dispatch delivered there in the AC check
  (``RegionReport.delivered_at_interface_mw``). The clearing's own balance is ``sum x =
  P_E`` (losses left to the AC check), so its dispatch delivers ``P_E`` plus the change of
  the losses; pinned to that same ``D`` the cleared dispatch is a feasible point of the
  OPF and ``cleared - opf >= 0`` up to the OPF's local optimum (and the reduction,
  below). (Iterating the pin until ``sum x = P_E``, as the LV baseline does, is no
  fixed-``sum x`` optimum: at a pinned exchange PIPS trades cost against losses, so it can
  end above the merit order where the clearing sits on it.)
- the ext_grid's bus voltage is pinned to its set point (PIPS would otherwise lower the
  whole region's voltage);
- voltage limits per level (:data:`~flexcore.region.split.LV_LIMITS` below 1 kV,
  :data:`~flexcore.region.split.MV_LIMITS` at and above), loading ``<= 100 %`` on lines and
  transformers; the base-case rule of :mod:`flexcore.market.multi` / :mod:`.study`: a row
  already beyond its limit in the base case (no activation) need not be repaired but must
  not get worse (the limit is widened to its base value).

**Reduced region** (``areas=[...]``): only the listed LV areas are modelled in full (their
bids flexible); every other LV area is dropped and replaced by its base-case draw as a
fixed load at its transformer's MV bus (the MV DSO's view, :mod:`.split`). Exact in the
base case; under activation the dropped areas cannot change their losses with the MV
voltage, so at a pinned exchange the reduced OPF activates a little more than the whole
region's (0.23 kW of 0.99 MW on the semiurb region, README) and can end above the
clearing. Used when the whole-region OPF is too slow. ``areas=None``: the whole region.

:func:`check_dispatch` is the oracle: one pandapower power flow of the **whole** region at
the set-points, checked against the same limits and rule.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandapower as pp

from flexcore.exchange.bids import BidTable
from flexcore.grid.powerflow import PF_OPTIONS
from flexcore.region.split import LV_KV, Region

#: an AC limit counts as violated only beyond these (PIPS tolerances; as in the baselines)
VM_TOL_PU = 1e-5
LOADING_TOL_PERCENT = 1e-3
#: a row this close to its limit counts as binding (DispatchCheck.at_limit)
AT_LIMIT_PU = 1e-4
AT_LIMIT_PERCENT = 1e-2
OPF_SGEN_NAME = "opf bid"
#: PIPS optimality / gradient / complementarity tolerance (pandapower's default 1e-6 leaves
#: bids visibly inside their bounds: ~1e-3 relative cost on the test region)
PIPS_TOL = 1e-9


# --------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class RegionLimits:
    """Per-row limits of a net after the base-case rule (by bus / branch index)."""

    vm_min_pu: dict[int, float]
    vm_max_pu: dict[int, float]
    line_max_percent: dict[int, float]
    trafo_max_percent: dict[int, float]
    base_violations: int


def region_limits(region: Region, net: pp.pandapowerNet) -> RegionLimits:
    """Limits per level for ``net``'s buses and branches, widened to the base value where
    ``net``'s current power flow result (the base case) is already beyond them."""
    lv = net.bus.vn_kv.to_numpy(float) < LV_KV
    lo = np.where(lv, region.lv_limits.vm_min_pu, region.mv_limits.vm_min_pu)
    hi = np.where(lv, region.lv_limits.vm_max_pu, region.mv_limits.vm_max_pu)
    vm = net.res_bus.vm_pu.loc[net.bus.index].to_numpy(float)
    n_bad = int(np.sum((vm < lo) | (vm > hi)))
    lo, hi = np.minimum(lo, vm), np.maximum(hi, vm)
    out: dict[str, dict[int, float]] = {}
    for table in ("line", "trafo"):
        lim = np.full(len(net[table]), max(region.lv_limits.loading_max_percent,
                                           region.mv_limits.loading_max_percent))
        ld = net[f"res_{table}"].loading_percent.loc[net[table].index].to_numpy(float)
        ld = np.nan_to_num(ld)
        n_bad += int(np.sum(ld > lim))
        out[table] = dict(zip(net[table].index.tolist(), np.maximum(lim, ld).tolist()))
    idx = net.bus.index.tolist()
    return RegionLimits(dict(zip(idx, lo.tolist())), dict(zip(idx, hi.tolist())),
                        out["line"], out["trafo"], n_bad)


# --------------------------------------------------------------------------- AC check
@dataclass
class DispatchCheck:
    """AC power flow of the whole region at a dispatch, against the limits (base rule)."""

    converged: bool
    feasible: bool = False
    violations: int = 0
    worst: str = ""
    vm_min_pu: float = math.nan
    vm_max_pu: float = math.nan
    max_loading_percent: float = math.nan
    ext_grid_p_mw: float = math.nan
    at_limit: int = 0        # rows within AT_LIMIT_* of their limit (binding)


def _flex_sgens(net: pp.pandapowerNet, bids: dict[str, BidTable], **kw: Any
                ) -> dict[str, np.ndarray]:
    out = {}
    for name, b in bids.items():
        out[name] = np.asarray(pp.create_sgens(net, [int(x) for x in b.bus], p_mw=0.0,
                                               q_mvar=0.0, name=OPF_SGEN_NAME, **kw),
                               dtype=np.int64)
    return out


def check_dispatch(region: Region, bids: dict[str, BidTable],
                   activation_mw: dict[str, np.ndarray], *, vm_tol_pu: float = VM_TOL_PU,
                   loading_tol_percent: float = LOADING_TOL_PERCENT) -> DispatchCheck:
    """One pandapower power flow of the whole region with every bid's activation as an sgen
    (``q = 0``); a row violates if it is beyond its (base-rule) limit by more than the
    tolerance."""
    net = copy.deepcopy(region.net)
    pp.runpp(net, **PF_OPTIONS)
    lim = region_limits(region, net)
    sg = _flex_sgens(net, bids)
    for name, idx in sg.items():
        net.sgen.loc[idx, "p_mw"] = np.asarray(activation_mw.get(name, np.zeros(len(idx))),
                                               float)
    try:
        pp.runpp(net, **PF_OPTIONS)
    except pp.LoadflowNotConverged:
        return DispatchCheck(False, worst="power flow did not converge")
    vm = net.res_bus.vm_pu
    bad: list[tuple[float, str]] = []
    lo = np.array([lim.vm_min_pu[b] for b in vm.index])
    hi = np.array([lim.vm_max_pu[b] for b in vm.index])
    v = vm.to_numpy(float)
    for k in np.flatnonzero((v < lo - vm_tol_pu) | (v > hi + vm_tol_pu)):
        bad.append((max(lo[k] - v[k], v[k] - hi[k]), f"bus {vm.index[k]} vm {v[k]:.5f}"))
    at = int(np.sum((v <= lo + AT_LIMIT_PU) | (v >= hi - AT_LIMIT_PU)))
    max_ld = 0.0
    for table, limits in (("line", lim.line_max_percent), ("trafo", lim.trafo_max_percent)):
        ld = net[f"res_{table}"].loading_percent
        if len(ld):
            max_ld = max(max_ld, float(np.nanmax(ld.to_numpy(float))))
        for i, val in zip(ld.index, ld.to_numpy(float)):
            at += int(val >= limits[i] - AT_LIMIT_PERCENT)
            if val > limits[i] + loading_tol_percent:
                bad.append((val - limits[i], f"{table} {i} loading {val:.3f} %"))
    bad.sort(reverse=True)
    return DispatchCheck(True, not bad, len(bad), bad[0][1] if bad else "",
                         float(v.min()), float(v.max()), max_ld,
                         float(net.res_ext_grid.p_mw.sum()), at)


# --------------------------------------------------------------------------- OPF
@dataclass
class RegionOPF:
    """One AC OPF of a region's request."""

    status: str              # "optimal" / "OPFNotConverged" / "unsupported"
    request_mw: float
    reduced: bool
    areas_modelled: int      # LV areas in the OPF model (all when not reduced)
    buses: int
    cost_eur_per_h: float = math.nan
    activated_mw: float = math.nan               # sum of the bids' activation
    interface_mw: float = math.nan               # base ext_grid P minus the OPF's
    time_s: float = 0.0
    activation_mw: dict[str, np.ndarray] = field(default_factory=dict)
    check: DispatchCheck | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "optimal" and math.isfinite(
            self.cost_eur_per_h)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("activation_mw", "check")}
        d["check"] = asdict(self.check) if self.check is not None else None
        d["active_areas"] = sorted(n for n, x in self.activation_mw.items()
                                   if np.any(np.abs(x) > 1e-6))
        return d


def reduced_net(region: Region, areas: list[str] | None) -> pp.pandapowerNet:
    """The whole region (``areas=None``) or the region with every LV area not in ``areas``
    replaced by its base-case draw at its transformer's MV bus."""
    net = copy.deepcopy(region.net)
    if areas is None:
        return net
    keep = set(areas)
    drop = [a for a in region.areas if a.name not in keep]
    if not drop:
        return net
    buses = np.concatenate([a.buses for a in drop])
    pp.toolbox.drop_buses(net, buses, drop_elements=True)
    net.trafo.drop([a.trafo for a in drop if a.trafo in net.trafo.index], inplace=True)
    for a in drop:
        pp.create_load(net, a.mv_bus, p_mw=a.p_mw, q_mvar=a.q_mvar, name=f"area {a.name}")
    return net


def region_opf(region: Region, bids: dict[str, BidTable], request_mw: float, *,
               interface_mw: float | None = None, areas: list[str] | None = None,
               check: bool = True, pips_tol: float = PIPS_TOL,
               verbose: int = 0) -> RegionOPF:
    """pandapower's AC OPF of ``request_mw`` over ``bids`` (module doc): the ext_grid's
    import is pinned to its base value minus ``interface_mw`` (default ``request_mw``);
    ``areas``: reduce the region to these LV areas (the others' bids are not offered);
    ``verbose``: PYPOWER's level (1: start and end, 2: PIPS prints every iteration)."""
    t0 = time.perf_counter()
    net = reduced_net(region, areas)
    used = {n: b for n, b in bids.items() if areas is None or n in set(areas)}
    pp.runpp(net, **PF_OPTIONS)
    base_ext = float(net.res_ext_grid.p_mw.sum())
    lim = region_limits(region, net)
    net.bus["min_vm_pu"] = net.bus.index.map(lim.vm_min_pu)
    net.bus["max_vm_pu"] = net.bus.index.map(lim.vm_max_pu)
    net.line["max_loading_percent"] = net.line.index.map(lim.line_max_percent)
    net.trafo["max_loading_percent"] = net.trafo.index.map(lim.trafo_max_percent)
    for table in ("load", "sgen", "storage", "gen"):
        if len(net[table]):
            net[table]["controllable"] = False
    n_areas = len(region.areas) if areas is None else len(set(areas))
    res = RegionOPF("unsupported", float(request_mw), areas is not None, n_areas, len(net.bus))
    if len(net.ext_grid) != 1:
        res.message = "needs exactly one ext_grid"
        return res
    eg = net.ext_grid.index[0]
    bus, vm = net.ext_grid.at[eg, "bus"], float(net.ext_grid.at[eg, "vm_pu"])
    net.bus.loc[bus, ["min_vm_pu", "max_vm_pu"]] = [vm - 1e-6, vm + 1e-6]
    target = base_ext - float(request_mw if interface_mw is None else interface_mw)
    net.ext_grid["controllable"] = True
    net.ext_grid["min_q_mvar"] = -1e4
    net.ext_grid["max_q_mvar"] = 1e4
    net.ext_grid["min_p_mw"] = target - 1e-6
    net.ext_grid["max_p_mw"] = target + 1e-6
    pp.create_poly_cost(net, eg, "ext_grid", cp1_eur_per_mw=0.0)
    sgens = {}
    for name, b in used.items():
        v = np.asarray(b.volume_mw, float)
        sgens[name] = np.asarray(pp.create_sgens(
            net, [int(x) for x in b.bus], p_mw=0.0, q_mvar=0.0, min_p_mw=np.minimum(0.0, v),
            max_p_mw=np.maximum(0.0, v), min_q_mvar=0.0, max_q_mvar=0.0, controllable=True,
            name=OPF_SGEN_NAME), dtype=np.int64)
        pp.create_poly_costs(net, sgens[name], "sgen", cp1_eur_per_mw=np.asarray(
            b.price_eur_per_mwh, float) * np.where(v >= 0, 1.0, -1.0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runopp(net, delta=1e-10, verbose=verbose, calculate_voltage_angles=False,
                      PDIPM_COSTTOL=pips_tol, PDIPM_GRADTOL=pips_tol, PDIPM_COMPTOL=pips_tol)
    except pp.OPFNotConverged as exc:
        res.status, res.message = "OPFNotConverged", f"pp.OPFNotConverged: {exc}"
        res.time_s = time.perf_counter() - t0
        return res
    x = {n: net.res_sgen.p_mw.loc[s].to_numpy(float) for n, s in sgens.items()}
    res.status = "optimal"
    res.activation_mw = {n: x.get(n, np.zeros(len(b))) for n, b in bids.items()}
    res.cost_eur_per_h = float(sum(np.abs(x[n]) @ used[n].price_eur_per_mwh for n in x))
    res.activated_mw = float(sum(v.sum() for v in x.values()))
    res.interface_mw = base_ext - float(net.res_ext_grid.p_mw.sum())
    if check:
        res.check = check_dispatch(region, bids, res.activation_mw)
    res.time_s = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------- comparison
def merit_order_cost(bids: dict[str, BidTable], request_mw: float) -> float:
    """The cheapest cost of ``request_mw`` (upward) without any grid limit: the lower bound
    both the clearing and the OPF sit above; equality means no limit binds."""
    vol = np.concatenate([np.maximum(b.volume_mw, 0.0) for b in bids.values()])
    price = np.concatenate([b.price_eur_per_mwh for b in bids.values()])
    order = np.argsort(price, kind="stable")
    cum = np.cumsum(vol[order])
    take = np.clip(float(request_mw) - (cum - vol[order]), 0.0, vol[order])
    return float(take @ price[order]) if cum[-1] >= request_mw - 1e-9 else math.inf


@dataclass(frozen=True)
class OPFGap:
    """The cleared cost against the OPF's: ``gap = cleared - opf`` (EUR/h and % of opf).
    ``merit_*``: the merit-order cost of the clearing's ``sum x`` and of the OPF's (no grid
    limit); ``limits_bind``: the clearing costs more than its merit order (an exact MILP:
    a limit binds in the linear model) or a row of the OPF's dispatch is at its limit."""

    cleared_eur_per_h: float
    opf_eur_per_h: float
    gap_eur_per_h: float
    gap_percent: float
    merit_cleared_eur_per_h: float
    merit_opf_eur_per_h: float
    limits_bind: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: relative cost above the merit order that counts as "a limit binds" (PIPS tolerance)
BIND_REL = 1e-4


def opf_gap(cleared_eur_per_h: float, opf: RegionOPF, bids: dict[str, BidTable]) -> OPFGap:
    """``cleared_eur_per_h`` (the clearing of ``opf.request_mw``) against ``opf``."""
    merit_c = merit_order_cost(bids, opf.request_mw)
    merit_o = merit_order_cost(bids, opf.activated_mw)
    gap = float(cleared_eur_per_h) - opf.cost_eur_per_h
    binds = (cleared_eur_per_h > merit_c * (1 + BIND_REL)
             or (opf.check is not None and opf.check.at_limit > 0))
    return OPFGap(float(cleared_eur_per_h), opf.cost_eur_per_h, gap,
                  100.0 * gap / opf.cost_eur_per_h if opf.cost_eur_per_h else math.nan,
                  merit_c, merit_o, bool(binds))
