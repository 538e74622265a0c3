"""Baselines for the evaluation: a DC-PTDF-style package, the AC OPF, and sequential LP.

- :func:`dc_package`: the textbook linearisation, one operating point (no activation). The
  base values ``V_0``, ``L_0`` are the DSO's AC power flow (so only the sensitivities
  differ from the AC package): loading sensitivities from the DC PTDF (bus susceptance
  matrix from the branch reactances, flat voltage, slack removed), converted to percent per
  MW with the branch rating at nominal voltage (``100 / S_rated``); voltage sensitivities
  from LinDistFlow, ``dV_i/dP_k = R_ik / V^2`` with ``V = 1`` and ``R_ik`` the resistance
  that the paths from the slack to ``i`` and ``k`` share (the inverse of the reduced,
  resistance-weighted Laplacian; exact for a radial grid). Reactive power is held.
- :func:`ac_opf`: pandapower's AC OPF (PIPS) on the full grid. Bids become controllable
  sgens with linear costs; the total activation is fixed to ``P_E`` by pinning the external
  grid's active power and iterating for the change in losses (docs/stack.md). The external
  grid's bus voltage is pinned to its set point: PIPS otherwise treats it as free within
  the bus limits, which lets it lower the whole grid's voltage.
- :func:`slp`: sequential linear programming on the full AC model: linearise at the current
  dispatch (one operating point), clear with the market, repeat until the dispatch stops
  moving.

Every reference dispatch is checked in an AC power flow of the DSO's model
(:func:`ac_check`).
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandapower as pp
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from flexcore.dso.linearizer import FLEX_SGEN_NAME, Linearizer, OperatingPoint, PointNotConverged
from flexcore.exchange.bids import BidTable
from flexcore.exchange.package import SensitivityPackage
from flexcore.grid import ppinternals
from flexcore.market import clear

#: an AC limit counts as violated only beyond these (solver tolerances, e.g. PIPS ~1e-6)
VM_TOL_PU = 1e-5
LOADING_TOL_PERCENT = 1e-3


# --------------------------------------------------------------------------- AC check
@dataclass(frozen=True)
class ACCheck:
    """AC power flow of the DSO's model at a dispatch, against the limits."""

    converged: bool
    feasible: bool
    violations: int
    worst: str
    vm_min_pu: float
    vm_max_pu: float
    max_loading_percent: float
    ext_grid_p_mw: float


def ac_check(lin: Linearizer, activation_mw, *, vm_tol_pu: float = VM_TOL_PU,
             loading_tol_percent: float = LOADING_TOL_PERCENT) -> ACCheck:
    """Run the AC power flow at ``activation_mw`` (bid order) and count limit violations
    larger than the tolerances."""
    rep = lin.validate(np.asarray(activation_mw, float), predicted_vm_pu={},
                       predicted_loading_percent={})
    if not rep.converged:
        return ACCheck(False, False, 0, rep.message, *(4 * [math.nan]))
    viol = [v for v in rep.violations
            if v.amount > (vm_tol_pu if v.kind == "vm_pu" else loading_tol_percent)]
    worst = "" if not viol else f"{viol[0].kind} {viol[0].value:.4f} (limit {viol[0].limit})"
    return ACCheck(True, not viol, len(viol), worst, rep.vm_min_pu, rep.vm_max_pu,
                   rep.max_loading_percent, float(lin.net.res_ext_grid.p_mw.sum()))


@dataclass
class ReferenceResult:
    """One reference solution of the balancing request on the full AC model."""

    method: str  # "ac_opf" or "slp"
    status: str  # "optimal" / "converged" / "max_iterations" / "OPFNotConverged" / ...
    cost_eur_per_h: float = math.nan
    delivered_mw: float = math.nan
    iterations: int = 0
    time_s: float = 0.0
    activation_mw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ac: ACCheck | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("optimal", "converged") and np.isfinite(self.cost_eur_per_h)

    def summary(self) -> dict:
        d = {k: getattr(self, k) for k in ("method", "status", "cost_eur_per_h", "delivered_mw",
                                           "iterations", "time_s", "message")}
        d["ac_feasible"] = bool(self.ac.feasible) if self.ac else False
        d["ac_violations"] = self.ac.violations if self.ac else None
        d["ac_max_loading_percent"] = self.ac.max_loading_percent if self.ac else math.nan
        d["ac_vm_max_pu"] = self.ac.vm_max_pu if self.ac else math.nan
        return d


def bid_cost(bids: BidTable, activation_mw) -> float:
    """``sum_j c_j |x_j|`` (EUR for one hour of activation)."""
    return float(np.sum(bids.price_eur_per_mwh * np.abs(np.asarray(activation_mw, float))))


# --------------------------------------------------------------------------- packages
def package_from_points(lin: Linearizer, points: list[OperatingPoint]) -> SensitivityPackage:
    """A package from operating points in the Linearizer's key-map row order."""
    return lin.package(points)[0]


def _reduced_inverse_columns(f, t, weight, nb, ref, cols) -> np.ndarray:
    """Columns ``cols`` of the inverse of the weighted Laplacian ``A^T diag(w) A`` with
    the reference buses' rows and columns removed (zero rows for the references)."""
    nbr = len(f)
    a = sp.csr_matrix((np.r_[np.ones(nbr), -np.ones(nbr)],
                       (np.r_[np.arange(nbr), np.arange(nbr)], np.r_[f, t])), shape=(nbr, nb))
    lap = (a.T @ sp.diags(weight) @ a).tocsc()
    keep = np.setdiff1d(np.arange(nb), ref)
    pos = np.full(nb, -1)
    pos[keep] = np.arange(len(keep))
    rhs = np.zeros((len(keep), len(cols)))
    ok = pos[cols] >= 0
    rhs[pos[cols[ok]], np.flatnonzero(ok)] = 1.0
    sol = np.zeros((nb, len(cols)))
    sol[keep] = spla.splu(lap[keep][:, keep]).solve(rhs)
    return sol


def dc_package(lin: Linearizer) -> SensitivityPackage:
    """The DC-PTDF / LinDistFlow package at the no-activation point (see module doc)."""
    t0 = time.perf_counter()
    zero = np.zeros(len(lin.bids))
    vm0, ld0 = lin.power_flow(zero)
    state = ppinternals.extract_state(lin.net, check=False)
    br = ppinternals.branch_parameters(lin.net)
    f, t = br.from_bus, br.to_bus
    r = np.maximum(np.abs(br.r_pu), 1e-9)
    x = np.maximum(np.abs(br.x_pu), 1e-9)
    nb = len(state.v)
    row_of_bus = dict(zip(state.bus_index.tolist(), state.bus_row.tolist()))
    inj = np.array([row_of_bus[int(b)] for b in lin.bids.bus], dtype=np.int64)
    uniq, inverse = np.unique(inj, return_inverse=True)
    # PTDF: flow on branch (from -> to) per unit injection at bus k, withdrawn at the slack
    theta = _reduced_inverse_columns(f, t, 1.0 / x, nb, state.ref, uniq)
    ptdf = (theta[f] - theta[t]) / x[:, None]
    # LinDistFlow: shared path resistance, V = 1 p.u.
    rcommon = _reduced_inverse_columns(f, t, 1.0 / r, nb, state.ref, uniq)
    vtdf_bus = rcommon / state.base_mva  # p.u. per MW
    # rows in the key map's order
    vm_rows = np.array([row_of_bus[b] for b in lin.keymap.vm_pu.values()], dtype=np.int64)
    pos_branch, per_mw = {}, {}
    for bs in state.branches:
        # rating at nominal voltage in MVA: base_mva * I_rated / I_base (from/hv side)
        s_rated = state.base_mva * bs.from_rating_ka / bs.from_base_ka
        for i, row, s in zip(bs.index.tolist(), bs.row.tolist(), s_rated.tolist()):
            pos_branch[(bs.element, i)] = row
            per_mw[(bs.element, i)] = 100.0 / s  # % per MW of active flow
    keys = [tuple(k) for k in lin.keymap.loading_percent.values()]
    ld_rows = np.array([pos_branch[k] for k in keys], dtype=np.int64)
    scale = np.array([per_mw[k] for k in keys])
    ltdf = ptdf[ld_rows] * scale[:, None]  # signed loading follows the active flow
    pt = OperatingPoint("dc a=0", 0.0, zero, vm0, ld0, vtdf_bus[vm_rows][:, inverse],
                        ltdf[:, inverse], time.perf_counter() - t0)
    return package_from_points(lin, [pt])


# --------------------------------------------------------------------------- SLP
def slp(lin: Linearizer, bids: BidTable, request_mw: float, *, max_iter: int = 10,
        tol_mw: float = 1e-6, start_mw=None, mip_rel_gap: float = 1e-6) -> ReferenceResult:
    """Sequential LP: one operating point at the current dispatch, clear, repeat until
    ``max |x_k - x_(k-1)| <= tol_mw`` (status ``converged``) or ``max_iter``."""
    t0 = time.perf_counter()
    x = np.zeros(len(bids)) if start_mw is None else np.asarray(start_mw, float)
    tso_bids = bids.without_bus()
    status, msg, k = "max_iterations", "", 0
    for k in range(1, max_iter + 1):
        try:
            pt = lin.point(x, label=f"slp {k}")
        except PointNotConverged as exc:
            status, msg = "pf_not_converged", str(exc)
            break
        res = clear(package_from_points(lin, [pt]), tso_bids, request_mw,
                    mip_rel_gap=mip_rel_gap, diagnose_infeasible=False)
        if res.status != "optimal":
            status, msg = res.status, res.message
            break
        new = res.activation_vector(bids.ids)
        step = float(np.max(np.abs(new - x)))
        x = new
        if step <= tol_mw:
            status = "converged"
            break
    elapsed = time.perf_counter() - t0
    ok = status in ("converged", "max_iterations")
    return ReferenceResult("slp", status, bid_cost(bids, x) if ok else math.nan,
                           float(x.sum()) if ok else math.nan, k, elapsed, x,
                           ac_check(lin, x) if ok else None, msg)


# --------------------------------------------------------------------------- AC OPF
def opf_net(lin: Linearizer, bids: BidTable):
    """The DSO's grid (current fixed injections) with one controllable sgen per bid."""
    net = copy.deepcopy(lin.net)
    net.sgen.drop(net.sgen.index[net.sgen.name == FLEX_SGEN_NAME], inplace=True)
    lim = lin.limits
    net.bus["min_vm_pu"] = lim.vm_min_pu
    net.bus["max_vm_pu"] = lim.vm_max_pu
    net.line["max_loading_percent"] = lim.loading_max_percent
    net.trafo["max_loading_percent"] = lim.loading_max_percent
    net.load["controllable"] = False
    net.sgen["controllable"] = False
    for eg in net.ext_grid.index:  # pin the slack voltage to its set point
        bus, vm = net.ext_grid.at[eg, "bus"], net.ext_grid.at[eg, "vm_pu"]
        net.bus.loc[bus, ["min_vm_pu", "max_vm_pu"]] = [vm - 1e-6, vm + 1e-6]
    net.ext_grid["controllable"] = True
    net.ext_grid["min_q_mvar"] = -1e3
    net.ext_grid["max_q_mvar"] = 1e3
    for eg in net.ext_grid.index:
        pp.create_poly_cost(net, eg, "ext_grid", cp1_eur_per_mw=0.0)
    vol = np.asarray(bids.volume_mw, float)
    sgens = np.asarray(pp.create_sgens(
        net, [int(b) for b in bids.bus], p_mw=0.0, q_mvar=0.0, min_p_mw=np.minimum(0.0, vol),
        max_p_mw=np.maximum(0.0, vol), min_q_mvar=0.0, max_q_mvar=0.0, controllable=True,
        name=["opf bid"] * len(vol)))
    # |x| pricing: cost c*x for upward bids, -c*x for downward (x <= 0)
    pp.create_poly_costs(net, sgens, "sgen", cp1_eur_per_mw=np.asarray(
        bids.price_eur_per_mwh, float) * np.where(vol >= 0, 1.0, -1.0))
    return net, sgens


def ac_opf(lin: Linearizer, bids: BidTable, request_mw: float, *, max_iter: int = 4,
           tol_mw: float = 1e-5, ext_grid_guess_mw: float | None = None) -> ReferenceResult:
    """pandapower AC OPF with the external grid pinned to ``import - request`` (iterated
    for losses until ``|activation - request| <= tol_mw``). ``ext_grid_guess_mw``: a first
    guess of the pinned import (e.g. from an SLP dispatch), else ``base import - P_E``."""
    t0 = time.perf_counter()
    net, sgens = opf_net(lin, bids)
    if len(net.ext_grid) != 1:
        return ReferenceResult("ac_opf", "unsupported", message="needs exactly one ext_grid")
    if ext_grid_guess_mw is None:
        pp.runpp(net)
        target = float(net.res_ext_grid.p_mw.iloc[0]) - request_mw
    else:
        target = float(ext_grid_guess_mw)
    status, msg, x, k = "max_iterations", "", np.zeros(len(bids)), 0
    while k < max_iter:
        k += 1
        net.ext_grid["min_p_mw"] = target - 1e-6
        net.ext_grid["max_p_mw"] = target + 1e-6
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp.runopp(net, delta=1e-10, verbose=False, calculate_voltage_angles=False)
        except pp.OPFNotConverged as exc:
            status, msg = "OPFNotConverged", f"pp.OPFNotConverged: {exc}"
            break
        x = net.res_sgen.p_mw.loc[sgens].to_numpy(float)
        gap = request_mw - float(x.sum())
        if abs(gap) <= tol_mw:
            status = "optimal"
            break
        target -= gap
    elapsed = time.perf_counter() - t0
    if status == "OPFNotConverged":
        return ReferenceResult("ac_opf", status, iterations=k, time_s=elapsed, message=msg)
    return ReferenceResult("ac_opf", status, bid_cost(bids, x), float(x.sum()), k, elapsed, x,
                           ac_check(lin, x), msg)
