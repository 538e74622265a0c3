"""The one place that touches pandapower internals (``net._ppc``, ``net._pd2ppc_lookups``).

After a converged ``pp.runpp`` it extracts the internal power-flow state: admittance
matrices, the complex voltage vector, bus types, and the maps from pandapower's bus, line
and transformer indices to internal rows. Every extraction is checked against pandapower's
own results (``res_bus.vm_pu``, ``res_line.i_from_ka``, ...): if a pandapower upgrade
changes the internals, :class:`InternalsChanged` says so loudly instead of returning
wrong sensitivities. ``tests/test_sensitivity.py`` runs these checks on Bergwald and SimBench grids.

Facts relied on (pandapower 3.x, see docs/stack.md):
- ``net._ppc["internal"]`` holds the in-service system: ``Ybus``, ``Yf``, ``Yt``, ``V``,
  ``ref``, ``pv``, ``pq``, ``bus``, ``branch``, ``baseMVA``;
- ``net._pd2ppc_lookups["bus"]`` maps pandapower bus index -> internal bus row;
- ``net._pd2ppc_lookups["branch"]`` gives ``{"line": (start, stop), "trafo": ...}`` row
  ranges of the full ``_ppc["branch"]``; ``_ppc["internal"]["branch_is"]`` marks the rows
  kept in the internal system: out-of-service branches *and* branches that touch an
  isolated bus (an island behind an open switch or an out-of-service line) are dropped, so
  rows are remapped through that mask (a running count of the status column alone is wrong
  as soon as the grid has an island).

For the fast power flow (:func:`extract_fast_model`, :mod:`flexcore.grid.fastpf`):
- ``_ppc["internal"]["bus"]`` columns ``PD``/``QD`` hold the constant-power load of each
  internal bus in MW/MVAr (loads minus static generators, storage, wards, ... times their
  ``scaling``); ``CID_P``/``CZD_P``/``CID_Q``/``CZD_Q`` their constant-current/impedance
  shares, which must be 0 (voltage-dependent loads are not supported by the fast path);
- ``_ppc["internal"]["gen"]`` columns ``GEN_BUS``/``PG``/``QG``/``GEN_STATUS``: ext_grids
  (at ``ref`` buses) and ``gen`` elements (at ``pv`` buses); after a power flow PG/QG of
  the slack and QG of PV generators hold results, which the Newton equations never use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

BR_STATUS = 10  # pypower branch column: in service
BASE_KV = 9  # pypower bus column: base voltage in kV
SQRT3 = np.sqrt(3.0)


class InternalsChanged(RuntimeError):
    """pandapower's internal data no longer matches what this module expects."""


@dataclass(frozen=True)
class BranchSet:
    """Monitored branches of one element type, mapped to internal rows."""

    element: str  # "line" or "trafo"
    index: np.ndarray  # pandapower indices (in service)
    row: np.ndarray  # internal branch rows
    from_bus: np.ndarray  # internal rows of the from (hv) buses
    from_base_ka: np.ndarray  # kA per p.u. current on the from (hv) side
    to_base_ka: np.ndarray
    from_rating_ka: np.ndarray  # current giving 100 % on the from (hv) side
    to_rating_ka: np.ndarray


@dataclass(frozen=True)
class PowerFlowState:
    """Internal state of a converged AC power flow (per unit, internal ordering)."""

    base_mva: float
    ybus: sp.csr_matrix
    yf: sp.csr_matrix
    yt: sp.csr_matrix
    v: np.ndarray  # complex bus voltages
    ref: np.ndarray
    pv: np.ndarray
    pq: np.ndarray
    bus_index: np.ndarray  # pandapower indices of the in-service buses
    bus_row: np.ndarray  # their internal rows
    branches: tuple[BranchSet, ...]


def extract_state(net, *, check: bool = True, atol: float = 1e-6) -> PowerFlowState:
    """Internal state after ``pp.runpp(net)``; verified against ``net.res_*`` when ``check``."""
    ppc = getattr(net, "_ppc", None)
    if not ppc or "internal" not in ppc or not net.get("converged", False):
        raise InternalsChanged("no converged AC power flow in this net (run pp.runpp first)")
    internal = ppc["internal"]
    try:
        ybus = sp.csr_matrix(internal["Ybus"])
        yf = sp.csr_matrix(internal["Yf"])
        yt = sp.csr_matrix(internal["Yt"])
        v = np.asarray(internal["V"], dtype=complex)
        ref, pv, pq = (np.asarray(internal[k], dtype=np.int64) for k in ("ref", "pv", "pq"))
        base_mva = float(internal["baseMVA"])
        bus_lookup = np.asarray(net._pd2ppc_lookups["bus"])
        branch_ranges = net._pd2ppc_lookups["branch"]
        full_branch = ppc["branch"]
        branch_is = np.asarray(internal["branch_is"], dtype=bool)
        int_bus = internal["bus"]
    except (KeyError, AttributeError, TypeError) as exc:
        raise InternalsChanged(f"pandapower internal field missing or renamed: {exc!r}") from None

    in_service = net.bus.index[net.bus.in_service.to_numpy(bool)].to_numpy(np.int64)
    bus_row = bus_lookup[in_service].astype(np.int64)
    if bus_row.min(initial=0) < 0:
        raise InternalsChanged("bus lookup holds negative internal rows")
    # buses cut off from every source are taken out of the internal system (rows past the
    # end); they have no voltage and are not monitored
    supplied = bus_row < len(v)
    in_service, bus_row = in_service[supplied], bus_row[supplied]
    if not np.isfinite(net.res_bus.loc[in_service, "vm_pu"].to_numpy(float)).all():
        raise InternalsChanged("bus lookup maps an unsupplied bus into the internal system")

    # the internal branch table holds exactly the rows of ``branch_is``: in service *and*
    # connected to supplied buses at both ends (branches into an island are dropped too)
    if branch_is.shape != (len(full_branch),) or branch_is.sum() != len(internal["branch"]):
        raise InternalsChanged(f"branch_is marks {int(branch_is.sum())} of {len(branch_is)} "
                               f"rows, the internal branch table has {len(internal['branch'])}")
    status = branch_is & (full_branch[:, BR_STATUS].real > 0)
    if status.sum() != branch_is.sum():
        raise InternalsChanged("branch_is marks a branch whose status column is out of service")
    internal_row_of_full = np.cumsum(status) - 1
    base_kv = int_bus[:, BASE_KV].real
    f_bus = np.asarray(internal["branch"][:, 0].real, dtype=np.int64)
    t_bus = np.asarray(internal["branch"][:, 1].real, dtype=np.int64)

    branches = []
    for element in ("line", "trafo"):
        table = net[element]
        if element not in branch_ranges or not len(table):
            continue
        start, stop = branch_ranges[element]
        if stop - start != len(table):
            raise InternalsChanged(f"branch lookup for {element} covers {stop - start} rows, "
                                   f"the table has {len(table)}")
        full_rows = np.arange(start, stop)
        active = status[full_rows] & table.in_service.to_numpy(bool)
        rows = internal_row_of_full[full_rows[active]]
        idx = table.index.to_numpy(np.int64)[active]
        fb, tb = f_bus[rows], t_bus[rows]
        from_base = base_mva / (SQRT3 * base_kv[fb])
        to_base = base_mva / (SQRT3 * base_kv[tb])
        sub = table.loc[idx]
        df = sub["df"].to_numpy(float) if "df" in sub else np.ones(len(sub))
        parallel = sub["parallel"].to_numpy(float)
        if element == "line":
            rating = sub["max_i_ka"].to_numpy(float) * df * parallel
            from_rating, to_rating = rating, rating
        else:  # pandapower's current-based loading: I * vn * sqrt(3) / sn on each side
            sn = sub["sn_mva"].to_numpy(float) * df * parallel
            from_rating = sn / (SQRT3 * sub["vn_hv_kv"].to_numpy(float))
            to_rating = sn / (SQRT3 * sub["vn_lv_kv"].to_numpy(float))
        branches.append(BranchSet(element, idx, rows, fb, from_base, to_base, from_rating,
                                  to_rating))

    state = PowerFlowState(base_mva, ybus, yf, yt, v, ref, pv, pq, in_service, bus_row,
                           tuple(branches))
    if check:
        _check(net, state, atol)
    return state


def _check(net, state: PowerFlowState, atol: float) -> None:
    vm = np.abs(state.v[state.bus_row])
    ref_vm = net.res_bus.loc[state.bus_index, "vm_pu"].to_numpy(float)
    if not np.allclose(vm, ref_vm, atol=atol):
        raise InternalsChanged("internal voltages do not match res_bus.vm_pu: the bus lookup "
                               "of this pandapower version differs from what flexcore expects")
    for bs in state.branches:
        lp = branch_loading(state, bs)[0]
        res = net[f"res_{bs.element}"].loc[bs.index, "loading_percent"].to_numpy(float)
        if not np.allclose(np.abs(lp), res, atol=1e-4, rtol=1e-5):
            worst = int(np.argmax(np.abs(np.abs(lp) - res)))
            raise InternalsChanged(
                f"{bs.element} loading from internal currents ({abs(lp[worst]):.6f} %) does "
                f"not match res_{bs.element}.loading_percent ({res[worst]:.6f} %) at index "
                f"{bs.index[worst]}: the branch lookup or loading definition changed")


def branch_loading(state: PowerFlowState, bs: BranchSet, v: np.ndarray | None = None):
    """Signed loading (%), plus the quantities needed for its derivative.

    Returns ``(signed_loading, side_is_from, i_from_pu, i_to_pu, sign)``: the loading is the
    larger of the two sides' current ratios, as pandapower reports it; its sign is the
    direction of active power at the from (hv) side.
    """
    v = state.v if v is None else v
    i_f = state.yf[bs.row] @ v
    i_t = state.yt[bs.row] @ v
    s_f = v[bs.from_bus] * np.conj(i_f)
    ratio_f = np.abs(i_f) * bs.from_base_ka / bs.from_rating_ka * 100.0
    ratio_t = np.abs(i_t) * bs.to_base_ka / bs.to_rating_ka * 100.0
    side_from = ratio_f >= ratio_t
    sign = np.where(s_f.real >= 0.0, 1.0, -1.0)
    return sign * np.where(side_from, ratio_f, ratio_t), side_from, i_f, i_t, sign


@dataclass(frozen=True)
class BranchParameters:
    """Series parameters of the in-service internal branches (per unit, internal rows)."""

    from_bus: np.ndarray  # internal bus rows
    to_bus: np.ndarray
    r_pu: np.ndarray
    x_pu: np.ndarray


def branch_parameters(net) -> BranchParameters:
    """From/to bus rows and series r, x of every internal branch after ``pp.runpp(net)``."""
    ppc = getattr(net, "_ppc", None)
    if not ppc or "internal" not in ppc:
        raise InternalsChanged("no AC power flow in this net (run pp.runpp first)")
    try:
        br = ppc["internal"]["branch"]
    except (KeyError, TypeError) as exc:
        raise InternalsChanged(f"pandapower internal field missing or renamed: {exc!r}") from None
    return BranchParameters(from_bus=br[:, 0].real.astype(np.int64),
                            to_bus=br[:, 1].real.astype(np.int64),
                            r_pu=br[:, 2].real.astype(float), x_pu=br[:, 3].real.astype(float))


# --------------------------------------------------------------------------- fast path


@dataclass(frozen=True)
class FastModel:
    """What the fast path takes from pandapower once per topology."""

    state: PowerFlowState
    bus_lookup: np.ndarray  # pandapower bus index -> internal row (>= n_bus: not in system)
    sbus_pu: np.ndarray  # specified complex injections (generation - load) in p.u.
    branch_to_bus: tuple[np.ndarray, ...]  # internal to-bus rows, one array per BranchSet


def extract_fast_model(net, *, check: bool = True) -> FastModel:
    """The fast path's model after a converged ``pp.runpp(net)`` (see module docstring)."""
    from pandapower.pypower.idx_bus import CID_P, CID_Q, CZD_P, CZD_Q, PD, QD
    from pandapower.pypower.idx_gen import GEN_BUS, GEN_STATUS, PG, QG

    state = extract_state(net, check=check)
    try:
        internal = net._ppc["internal"]
        bus = np.asarray(internal["bus"])
        gen = np.asarray(internal["gen"])
        branch = np.asarray(internal["branch"])
        bus_lookup = np.asarray(net._pd2ppc_lookups["bus"], dtype=np.int64)
    except (KeyError, AttributeError, TypeError) as exc:
        raise InternalsChanged(f"pandapower internal field missing or renamed: {exc!r}") from None
    nb = len(state.v)
    if bus.shape[0] != nb:
        raise InternalsChanged(f"internal bus table has {bus.shape[0]} rows, V has {nb}")
    volt_dep = np.abs(bus[:, [CID_P, CZD_P, CID_Q, CZD_Q]].real).max(initial=0.0)
    if volt_dep > 0.0:
        raise NotImplementedError("voltage-dependent (ZIP) loads are not supported by the fast "
                                  "power flow; use pandapower.runpp")
    s_load = (bus[:, PD].real + 1j * bus[:, QD].real)
    on = gen[:, GEN_STATUS].real > 0
    g_bus = gen[on, GEN_BUS].real.astype(np.int64)
    s_gen = gen[on, PG].real + 1j * gen[on, QG].real
    keep = ~np.isin(g_bus, state.ref)  # the slack's PG/QG are results, not specifications
    s_gen_bus = np.bincount(g_bus[keep], weights=s_gen[keep].real, minlength=nb) \
        + 1j * np.bincount(g_bus[keep], weights=s_gen[keep].imag, minlength=nb)
    sbus = (s_gen_bus - s_load) / state.base_mva
    t_bus = np.asarray(branch[:, 1].real, dtype=np.int64)
    to_bus = tuple(t_bus[bs.row] for bs in state.branches)
    if check:  # the specified injections must be met by the converged voltages
        v = state.v
        mis = v * np.conj(state.ybus @ v) - sbus
        worst = max(np.abs(mis[state.pq]).max(initial=0.0),
                    np.abs(mis[np.r_[state.pv, state.pq]].real).max(initial=0.0))
        if worst > 1e-5:
            raise InternalsChanged(f"internal bus/gen tables do not reproduce the converged "
                                   f"power flow (mismatch {worst:.2e} p.u.)")
    return FastModel(state=state, bus_lookup=bus_lookup, sbus_pu=sbus, branch_to_bus=to_bus)
