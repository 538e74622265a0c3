"""AC sensitivities (VTDF = dV/dP, LTDF = dL/dP) from the power-flow Jacobian.

At a converged AC power flow the Newton-Raphson Jacobian ``J`` (rebuilt here at the
converged voltages, not taken from pandapower's last iteration) links injections and
state: ``J [dtheta_pvpq; dVm_pq] = [dP_pvpq; dQ_pq]``. A unit active injection at bus k with
reactive power held is the right-hand side ``e_k`` in the P rows; one sparse LU
factorisation of ``J`` then gives every column at once. Branch loadings follow by the chain
rule through the branch currents ``I_f = Yf V`` and ``I_t = Yt V``:
``d|I| = Re(conj(I) dI) / |I|``, on the side that pandapower reports (the larger ratio),
signed by the direction of active power (docs/method.md). Units: p.u. per MW and percent per MW.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from flexcore.grid import ppinternals
from flexcore.grid.ppinternals import PowerFlowState


@dataclass(frozen=True)
class Sensitivities:
    """Values and derivatives at one operating point.

    Rows: ``bus_index`` (all in-service buses) and ``branches`` (``(element, index)`` of all
    in-service lines then transformers). Columns: ``injection_buses``.
    """

    injection_buses: np.ndarray
    bus_index: np.ndarray
    branches: tuple[tuple[str, int], ...]
    vm_pu: np.ndarray
    loading_percent: np.ndarray
    vtdf: np.ndarray  # (buses, injection_buses), p.u. per MW
    ltdf: np.ndarray  # (branches, injection_buses), % per MW


def jacobian(state: PowerFlowState) -> sp.csc_matrix:
    """Newton-Raphson Jacobian in polar coordinates at the state's voltages."""
    v, ybus = state.v, state.ybus
    ibus = ybus @ v
    diag_v = sp.diags(v)
    diag_vnorm = sp.diags(v / np.abs(v))
    ds_dvm = diag_v @ np.conj(ybus @ diag_vnorm) + sp.diags(np.conj(ibus)) @ diag_vnorm
    ds_dva = 1j * diag_v @ np.conj(sp.diags(ibus) - ybus @ diag_v)
    pvpq = np.r_[state.pv, state.pq]
    pq = state.pq
    ds_dva, ds_dvm = ds_dva.tocsr(), ds_dvm.tocsr()
    j11 = ds_dva[pvpq][:, pvpq].real
    j12 = ds_dvm[pvpq][:, pq].real
    j21 = ds_dva[pq][:, pvpq].imag
    j22 = ds_dvm[pq][:, pq].imag
    return sp.bmat([[j11, j12], [j21, j22]], format="csc")


def compute(net, injection_buses, *, check: bool = True) -> Sensitivities:
    """Sensitivities at the converged power flow already in ``net`` (run ``pp.runpp`` first).

    ``injection_buses`` are pandapower bus indices (duplicates allowed: same column values).
    """
    state = ppinternals.extract_state(net, check=check)
    injection_buses = np.asarray(injection_buses, dtype=np.int64)
    nb = len(state.v)
    row_of_bus = dict(zip(state.bus_index.tolist(), state.bus_row.tolist()))
    try:
        inj_rows = np.array([row_of_bus[b] for b in injection_buses.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(
            f"injection bus {exc.args[0]} is not an in-service bus of the grid") from None
    pvpq = np.r_[state.pv, state.pq]
    npvpq, npq = len(pvpq), len(state.pq)
    pos_pvpq = np.full(nb, -1, dtype=np.int64)
    pos_pvpq[pvpq] = np.arange(npvpq)

    uniq, inverse = np.unique(inj_rows, return_inverse=True)
    rhs = np.zeros((npvpq + npq, len(uniq)))
    cols = np.flatnonzero(pos_pvpq[uniq] >= 0)  # an injection at the slack changes nothing
    rhs[pos_pvpq[uniq[cols]], cols] = 1.0 / state.base_mva
    lu = spla.splu(jacobian(state))
    x = lu.solve(rhs)

    dtheta = np.zeros((nb, len(uniq)))
    dvm = np.zeros((nb, len(uniq)))
    dtheta[pvpq] = x[:npvpq]
    dvm[state.pq] = x[npvpq:]
    v = state.v
    dv = v[:, None] * (1j * dtheta + dvm / np.abs(v)[:, None])

    vtdf_u = dvm[state.bus_row]
    loading, ltdf_u, branch_keys = [], [], []
    for bs in state.branches:
        lp, side_from, i_f, i_t, sign = ppinternals.branch_loading(state, bs)
        d = np.empty((len(bs.row), len(uniq)))
        for side, y, i_side, base, rating in (
                (side_from, state.yf, i_f, bs.from_base_ka, bs.from_rating_ka),
                (~side_from, state.yt, i_t, bs.to_base_ka, bs.to_rating_ka)):
            if side.any():  # only the side that pandapower reports
                scale = (sign * base / rating * 100.0)[side]
                d[side] = _dabs(i_side[side], y[bs.row[side]] @ dv) * scale[:, None]
        ltdf_u.append(d)
        loading.append(lp)
        branch_keys += [(bs.element, int(i)) for i in bs.index]
    ltdf_u = np.vstack(ltdf_u) if ltdf_u else np.zeros((0, len(uniq)))
    return Sensitivities(
        injection_buses=injection_buses,
        bus_index=state.bus_index,
        branches=tuple(branch_keys),
        vm_pu=np.abs(v[state.bus_row]),
        loading_percent=np.concatenate(loading) if loading else np.zeros(0),
        vtdf=vtdf_u[:, inverse],
        ltdf=ltdf_u[:, inverse],
    )


def _dabs(i: np.ndarray, di: np.ndarray) -> np.ndarray:
    """d|I| = Re(conj(I) dI) / |I| (0 where no current flows)."""
    mag = np.abs(i)
    inv = np.divide(1.0, mag, out=np.zeros_like(mag), where=mag > 1e-12)
    return (i.real[:, None] * di.real + i.imag[:, None] * di.imag) * inv[:, None]


def signed_results(net) -> tuple[np.ndarray, np.ndarray, tuple[tuple[str, int], ...]]:
    """(vm_pu of in-service buses, signed loadings of in-service lines+trafos, branch keys)
    after a power flow; the same row order as :func:`compute`."""
    state = ppinternals.extract_state(net, check=False)
    loading, keys = [], []
    for bs in state.branches:
        loading.append(ppinternals.branch_loading(state, bs)[0])
        keys += [(bs.element, int(i)) for i in bs.index]
    return (np.abs(state.v[state.bus_row]),
            np.concatenate(loading) if loading else np.zeros(0), tuple(keys))


def finite_differences(net, injection_buses, *, h_mw: float = 1e-5, central: bool = True,
                       tolerance_mva: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """(VTDF, LTDF) by perturbed AC power flows: the test oracle and the benchmark baseline.

    A probe generator at each bus in turn is set to ``+h`` (and ``-h`` for central
    differences); ``(n + 1)`` or ``2n`` power flows. Works on a copy of ``net``.
    """
    import copy

    import pandapower as pp

    work = copy.deepcopy(net)
    probe = pp.create_sgen(work, int(injection_buses[0]), p_mw=0.0, name="fd probe")

    def run(dp):
        work.sgen.at[probe, "p_mw"] = dp
        pp.runpp(work, tolerance_mva=tolerance_mva)
        vm, lp, _ = signed_results(work)
        return vm, lp

    base = None if central else run(0.0)
    cols_v, cols_l = [], []
    for bus in injection_buses:
        work.sgen.at[probe, "bus"] = int(bus)
        plus = run(h_mw)
        minus = run(-h_mw) if central else base
        step = 2 * h_mw if central else h_mw
        cols_v.append((plus[0] - minus[0]) / step)
        cols_l.append((plus[1] - minus[1]) / step)
    return np.array(cols_v).T, np.array(cols_l).T
