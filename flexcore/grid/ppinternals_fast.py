"""pandapower internals needed by the fast power flow (:mod:`flexcore.grid.fastpf`).

Kept apart from :mod:`flexcore.grid.ppinternals` only so that it can be folded into it
later; like that module, it is the only kind of place allowed to read ``net._ppc``.

:func:`extract_fast_model` reads, after one converged ``pp.runpp``, everything a Newton
solver needs to repeat the power flow for new load/sgen powers without pandapower:
the :class:`~flexcore.grid.ppinternals.PowerFlowState` (Ybus, Yf, Yt, V, ref/pv/pq, branch
sets with ratings; verified against ``net.res_*``), the bus lookup (pandapower bus index ->
internal row), the specified injection vector ``Sbus`` of every element pandapower put into
the internal bus and generator tables, and the internal to-bus of every monitored branch.

Facts relied on (pandapower 3.x), besides those of :mod:`ppinternals`:
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

from flexcore.grid import ppinternals
from flexcore.grid.ppinternals import InternalsChanged, PowerFlowState


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

    state = ppinternals.extract_state(net, check=check)
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
