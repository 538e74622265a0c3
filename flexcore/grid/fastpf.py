"""Fast repeated AC power flows and sensitivities on one pandapower grid.

pandapower stays the model format and the reference: :class:`FastPowerFlow` runs one
``pp.runpp`` per topology, takes pandapower's internal model from it
(:func:`flexcore.grid.ppinternals.extract_fast_model`, checked against ``net.res_*``),
and from then on repeats the power flow for new load/sgen powers with its own Newton-Raphson
solver on arrays:

- ``Sbus = S_fixed + C_p @ p + 1j * C_q @ q``: one sparse matrix per quantity maps the
  element powers (MW, MVAr, in the order given at construction) to internal buses, built once;
- Newton-Raphson in polar coordinates, as pandapower's ``newtonpf``, with the Jacobian filled
  into a fixed sparse pattern (one gather per iteration, no sparse-matrix algebra), one
  SuperLU factorisation per iteration, warm start from the last converged voltages;
- loadings from ``Yf``/``Yt`` rows of the monitored lines and transformers with the rating
  vectors: pandapower's current-based loading, signed by the direction of active power at
  the from (hv) side, exactly as :func:`flexcore.grid.ppinternals.branch_loading`;
- :meth:`FastPowerFlow.sensitivities` factorises the Jacobian once at the converged voltages
  (cached per solution) and solves all injection columns at once (SuperLU's factors, both
  triangular solves over the block of right-hand sides in one compiled kernel:
  :class:`flexcore.grid.lusolve.BlockLU`), as
  :func:`flexcore.grid.sensitivity.compute`, which it reproduces to rounding.

Use (one object per grid model, e.g. in GridSim and behind the Linearizer's power-flow
session)::

    fast = FastPowerFlow(net, load_index=load_idx, sgen_index=sgen_idx)   # one pp.runpp
    res = fast.run(load_p_mw, load_q_mvar, sgen_p_mw)   # arrays in load_idx/sgen_idx order
    if res.converged:
        res.vm_pu, res.loading_percent, res.p_slack_mw, res.p_loss_mw
        sens = fast.sensitivities(bid_buses)   # a sensitivity.Sensitivities, same rows

Results are arrays in the row order of :func:`flexcore.grid.sensitivity.signed_results`
(``vm_pu`` of the in-service supplied buses, signed ``loading_percent`` of in-service lines
then transformers).

Assumptions (checked where cheap; see ``tests/test_fastpf.py``):
- between re-initialisations only the ``p_mw``/``q_mvar`` of the tracked loads and sgens
  change. Everything else (other elements' powers, ``scaling``, line and transformer
  parameters, tap positions, generator set points) is frozen at the last initialisation:
  call :meth:`FastPowerFlow.reinit` after changing any of it;
- topology (``in_service`` of buses, lines, transformers, loads, sgens, gens, ext_grids,
  storages, and ``switch.closed``) is compared with the initialisation on every
  :meth:`FastPowerFlow.run` when ``check_topology`` (the default); a change re-initialises
  with one ``pp.runpp`` at the new powers;
- constant-power loads only (no ZIP shares); slack at ext_grid buses, ``gen`` elements as PV
  buses without reactive limits (pandapower's default ``enforce_q_lims=False``);
- convergence: infinity norm of the p.u. mismatch below ``tolerance_pu`` (default 1e-10,
  tighter than pandapower's 1e-8 MVA; an extra iteration costs ~0.1 ms); a power flow that
  does not converge within ``max_iterations`` is reported (``converged=False``, NaN
  results) and the next call starts from the initial voltages again, never raised.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from flexcore.grid.lusolve import BlockLU
from flexcore.grid.ppinternals import FastModel, extract_fast_model
from flexcore.grid.sensitivity import Sensitivities

#: tables whose ``in_service`` flags define the topology (with ``switch.closed``)
TOPOLOGY_TABLES = ("bus", "line", "trafo", "trafo3w", "load", "sgen", "gen", "ext_grid",
                   "storage", "impedance", "shunt", "ward", "xward")


#: "klu": lightsim2grid's compiled Newton-Raphson (KLU) on our Ybus/Sbus; "scipy": the
#: vectorised Newton-Raphson below (SuperLU); "auto": klu if lightsim2grid is installed
ENGINES = ("auto", "klu", "scipy")


def klu_available() -> bool:
    """True if lightsim2grid's KLU Newton solver can be imported."""
    try:
        _klu_class()
    except ImportError:
        return False
    return True


def _klu_class():
    import warnings

    with warnings.catch_warnings():  # lightsim2grid 1.2 deprecates the module path, not the class
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from lightsim2grid.algorithm import KLUSolver  # type: ignore[import-not-found,import-untyped,unused-ignore]
        except ImportError:
            from lightsim2grid.solver import KLUSolver  # type: ignore[import-not-found,import-untyped,unused-ignore]
    return KLUSolver


class FastPowerFlowError(RuntimeError):
    """The fast power flow cannot be set up (e.g. the initial pandapower power flow failed)."""


@dataclass(frozen=True)
class PowerFlowResult:
    """One AC power flow: arrays in :func:`sensitivity.signed_results` row order."""

    converged: bool
    iterations: int
    vm_pu: np.ndarray  # in-service supplied buses (NaN if not converged)
    loading_percent: np.ndarray  # signed, lines then transformers (NaN if not converged)
    p_slack_mw: float  # active power drawn from the ext_grid(s), > 0 import
    p_loss_mw: float  # active losses of the monitored lines and transformers
    mismatch_pu: float  # final infinity norm of the power mismatch


@dataclass
class _Pattern:
    """Fixed sparse pattern of the Newton Jacobian, filled by one gather per iteration."""

    ybus_row: np.ndarray
    ybus_col: np.ndarray
    ybus_data: np.ndarray
    diag_pos: np.ndarray  # position of (i, i) in the Ybus nonzeros
    gather: np.ndarray  # CSC data of J = concat(dVa.real, dVm.real, dVa.imag, dVm.imag)[gather]
    indices: np.ndarray
    indptr: np.ndarray
    size: int


class FastPowerFlow:
    """Repeated AC power flows of one pandapower grid for new load and sgen powers.

    ``load_index`` / ``sgen_index``: the pandapower indices whose powers :meth:`run` takes,
    in that order (default: every row of ``net.load`` / ``net.sgen``).
    ``copy_net`` (default True): work on a deep copy (``self.net``), so the caller's object
    is never modified; with False the caller's net is used (``pp.runpp`` runs on it at
    (re-)initialisation and after a topology change), so that topology changes the caller
    makes are seen by the next :meth:`run`. Topology changes are detected on ``self.net``.
    ``engine``: see :data:`ENGINES`.
    """

    def __init__(self, net, *, load_index=None, sgen_index=None, tolerance_pu: float = 1e-10,
                 max_iterations: int = 10, engine: str = "auto", copy_net: bool = True):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        if engine == "auto":
            engine = "klu" if klu_available() else "scipy"
        elif engine == "klu" and not klu_available():
            raise FastPowerFlowError("engine 'klu' needs lightsim2grid (pip install lightsim2grid)")
        self.engine = engine
        self.net = copy.deepcopy(net) if copy_net else net
        self.load_index = np.asarray(self.net.load.index if load_index is None else load_index,
                                     dtype=np.int64)
        self.sgen_index = np.asarray(self.net.sgen.index if sgen_index is None else sgen_index,
                                     dtype=np.int64)
        self.tolerance_pu = float(tolerance_pu)
        self.max_iterations = int(max_iterations)
        self.reinit_count = 0
        # (solution id, SuperLU) of the Jacobian at the converged voltages
        self._lu: tuple[int, BlockLU] | None = None
        self._inj_memo: tuple | None = None   # _injection_columns
        self._ltdf_layout: tuple | None = None   # _ltdf_rows
        self._vrow: np.ndarray | None = None   # _vm_unknown_rows
        self._solution_id = 0
        self.reinit()

    # ------------------------------------------------------------------ set-up
    def _topology(self) -> tuple:
        net = self.net
        parts = []
        for name in TOPOLOGY_TABLES:
            table = net.get(name)
            if table is not None and len(table):
                parts.append(table.index.to_numpy().tobytes())
                parts.append(table["in_service"].to_numpy(bool).tobytes())
        if "switch" in net and len(net.switch):
            parts.append(net.switch["closed"].to_numpy(bool).tobytes())
        return tuple(parts)

    def topology_changed(self) -> bool:
        """True if in_service flags or switch states differ from the initialisation."""
        return self._topology() != self._topo

    def reinit(self) -> None:
        """Rebuild the internal model from one ``pp.runpp`` of the current net."""
        import pandapower as pp

        try:
            pp.runpp(self.net, numba=False)
        except pp.LoadflowNotConverged:
            raise FastPowerFlowError("the initial pandapower power flow did not converge") \
                from None
        self.reinit_count += 1
        self._topo = self._topology()
        self._build(extract_fast_model(self.net))

    def _build(self, model: FastModel) -> None:
        st = model.state
        self.model = model
        self.base_mva = st.base_mva
        nb = len(st.v)
        self.n_bus = nb
        self.ref, self.pv, self.pq = st.ref, st.pv, st.pq
        self.pvpq = np.r_[st.pv, st.pq]
        self.bus_index, self.bus_row = st.bus_index, st.bus_row
        self.branch_keys = tuple((bs.element, int(i)) for bs in st.branches for i in bs.index)

        # element powers -> internal buses
        c_load_p, s_load_fixed = self._incidence("load", self.load_index, model)
        c_sgen_p, s_sgen_fixed = self._incidence("sgen", self.sgen_index, model)
        self._c_load, self._c_sgen = c_load_p, c_sgen_p
        # S_fixed: everything pandapower specified minus the tracked elements' part
        self._s_fixed = model.sbus_pu + (s_load_fixed - s_sgen_fixed) / st.base_mva

        # monitored branches, stacked lines then transformers
        rows = np.concatenate([bs.row for bs in st.branches]) if st.branches else \
            np.zeros(0, np.int64)
        self._yf = st.yf[rows].tocsr()
        self._yt = st.yt[rows].tocsr()
        self._f_bus = np.concatenate([bs.from_bus for bs in st.branches]) if st.branches else rows
        self._t_bus = np.concatenate(model.branch_to_bus) if st.branches else rows
        def cat(name):
            return (np.concatenate([getattr(bs, name) for bs in st.branches])
                    if st.branches else np.zeros(0))

        self._k_from = cat("from_base_ka") / cat("from_rating_ka") * 100.0
        self._k_to = cat("to_base_ka") / cat("to_rating_ka") * 100.0
        self._pattern = self._jacobian_pattern(st.ybus)
        self._ybus_ref = st.ybus[st.ref]  # the slack rows (P_slack of every run)
        if self.engine == "klu":
            self._klu = _klu_class()()
            self._ybus_csc = sp.csc_matrix(st.ybus)
            self._slack_weights = np.zeros(nb)
            self._slack_weights[st.ref] = 1.0 / max(len(st.ref), 1)
            self._klu_ids = tuple(np.asarray(a, dtype=np.int32) for a in (st.ref, st.pv, st.pq))
        self._v0 = st.v.copy()
        self.v = st.v.copy()
        self.converged = True
        self._solution_id += 1
        self._inj_memo = self._vrow = self._ltdf_layout = None   # of the former model
        self._slack_memo: tuple | None = None                  # set_slack_vm

    def _incidence(self, element: str, index: np.ndarray, model: FastModel):
        """Sparse (n_bus x n_elements) map of p.u. powers (scaling included) and the
        tracked elements' current contribution (MW + j MVAr) per internal bus."""
        table = self.net[element]
        missing = np.setdiff1d(index, table.index.to_numpy())
        if len(missing):
            raise ValueError(f"{element} index {missing[:5].tolist()} not in net.{element}")
        sub = table.loc[index]
        row = model.bus_lookup[sub["bus"].to_numpy(np.int64)]
        bus_on = self.net.bus.loc[sub["bus"].to_numpy(np.int64), "in_service"].to_numpy(bool)
        active = sub["in_service"].to_numpy(bool) & bus_on & (row >= 0) & (row < self.n_bus)
        scale = sub["scaling"].to_numpy(float) if "scaling" in sub else np.ones(len(sub))
        cols = np.flatnonzero(active)
        c = sp.csr_matrix((scale[cols] / model.state.base_mva, (row[cols], cols)),
                          shape=(self.n_bus, len(index)))
        s_now = c @ (sub["p_mw"].to_numpy(float) + 1j * sub["q_mvar"].to_numpy(float))
        return c, s_now * model.state.base_mva

    def _jacobian_pattern(self, ybus: sp.csr_matrix) -> _Pattern:
        nb = self.n_bus
        y = (sp.csr_matrix(ybus) + sp.identity(nb, format="csr") * 0.0).tocoo()
        # keep explicit zeros of the diagonal: rebuild from the union of patterns
        pat = sp.coo_matrix((np.ones(y.nnz), (y.row, y.col)), shape=(nb, nb)).tocsr()
        pat = (pat + sp.identity(nb, format="csr")).tocoo()
        order = np.lexsort((pat.col, pat.row))
        r, c = pat.row[order].astype(np.int64), pat.col[order].astype(np.int64)
        ycsr = sp.csr_matrix(ybus)
        data = np.asarray(ycsr[r, c]).ravel().astype(complex)
        k = len(r)
        diag_pos = np.full(nb, -1, dtype=np.int64)
        d = np.flatnonzero(r == c)
        diag_pos[r[d]] = d
        npvpq, npq = len(self.pvpq), len(self.pq)
        pos_a = np.full(nb, -1, dtype=np.int64)  # angle unknowns / P rows
        pos_a[self.pvpq] = np.arange(npvpq)
        pos_m = np.full(nb, -1, dtype=np.int64)  # magnitude unknowns / Q rows
        pos_m[self.pq] = npvpq + np.arange(npq)
        jr_parts, jc_parts, src_parts = [], [], []
        for block, (prow, pcol) in enumerate(((pos_a, pos_a), (pos_a, pos_m),
                                               (pos_m, pos_a), (pos_m, pos_m))):
            sel = np.flatnonzero((prow[r] >= 0) & (pcol[c] >= 0))
            jr_parts.append(prow[r[sel]])
            jc_parts.append(pcol[c[sel]])
            src_parts.append(block * k + sel)
        jr, jc = np.concatenate(jr_parts), np.concatenate(jc_parts)
        src = np.concatenate(src_parts)
        order = np.lexsort((jr, jc))  # CSC: by column, then row
        size = npvpq + npq
        indptr = np.zeros(size + 1, dtype=np.int64)
        np.add.at(indptr, jc + 1, 1)
        return _Pattern(ybus_row=r, ybus_col=c, ybus_data=data, diag_pos=diag_pos,
                        gather=src[order], indices=jr[order].astype(np.int32),
                        indptr=np.cumsum(indptr).astype(np.int32), size=size)

    def set_slack_vm(self, vm_pu: float, *, ext_grid=None) -> None:
        """New voltage magnitude set point of the ext_grid(s) (``ext_grid``: one index;
        None: every in-service ext_grid) without re-initialising: the slack's V is only a
        boundary value of the Newton equations (its bus keeps its angle), so the admittance
        build and the Jacobian pattern stay. Written into ``net.ext_grid.vm_pu`` as well
        (a later re-initialisation sees it); the next :meth:`run` solves from the last
        voltages scaled by the slack's change."""
        eg = self.net.ext_grid
        memo = self._slack_memo
        bus, on = eg.bus.to_numpy(np.int64), eg.in_service.to_numpy(bool)
        key = (ext_grid, bus.tobytes(), on.tobytes())   # a moved ext_grid is checked again
        if memo is not None and memo[0] == key:
            rows, buses = memo[1:]
        else:
            rows = eg.index[on] if ext_grid is None else [ext_grid]
            pos = eg.index.get_indexer(rows)
            buses = self.model.bus_lookup[bus[pos]]
            if not np.isin(buses, self.ref).all():
                raise ValueError(f"ext_grid(s) {list(rows)} are not at a slack bus of the "
                                 "model")
            self._slack_memo = (key, rows, buses)
        vm = float(vm_pu)
        for r in rows:
            eg.at[r, "vm_pu"] = vm
        def moved(v: np.ndarray) -> np.ndarray:
            old = v[buses]
            v = v * (vm / np.abs(old[0])) if len(self.ref) == 1 else v.copy()
            v[buses] = vm * old / np.abs(old)
            return v

        self.v, self._v0 = moved(self.v), moved(self._v0)
        self.converged = False  # sensitivities need a run at the new set point
        self._solution_id += 1

    # ------------------------------------------------------------------ solve
    def sbus(self, load_p_mw, load_q_mvar, sgen_p_mw, sgen_q_mvar=None) -> np.ndarray:
        """Specified internal injections (p.u.) for the tracked elements' powers."""
        s_load = self._c_load @ (np.asarray(load_p_mw, float)
                                 + 1j * np.asarray(load_q_mvar, float))
        s_sgen_pq = np.asarray(sgen_p_mw, float) + (
            0.0 if sgen_q_mvar is None else 1j * np.asarray(sgen_q_mvar, float))
        return self._s_fixed - s_load + self._c_sgen @ s_sgen_pq

    def jacobian(self, v: np.ndarray) -> sp.csc_matrix:
        """Newton Jacobian [[dP/dVa, dP/dVm], [dQ/dVa, dQ/dVm]] (pvpq/pq ordering) at ``v``."""
        p = self._pattern
        ibus = self._ybus_v(v)
        vnorm = v / np.abs(v)
        yv = p.ybus_data * v[p.ybus_col]
        ds_dva = -1j * v[p.ybus_row] * np.conj(yv)
        ds_dvm = v[p.ybus_row] * np.conj(p.ybus_data * vnorm[p.ybus_col])
        ds_dva[p.diag_pos] += 1j * v * np.conj(ibus)
        ds_dvm[p.diag_pos] += np.conj(ibus) * vnorm
        stacked = np.concatenate((ds_dva.real, ds_dvm.real, ds_dva.imag, ds_dvm.imag))
        return sp.csc_matrix((stacked[p.gather], p.indices, p.indptr), shape=(p.size, p.size))

    def _ybus_v(self, v: np.ndarray) -> np.ndarray:
        return self.model.state.ybus @ v

    def solve(self, sbus_pu: np.ndarray, *, v_start: np.ndarray | None = None
              ) -> tuple[bool, int, np.ndarray, float]:
        """Newton-Raphson for ``sbus_pu``: ``(converged, iterations, V, mismatch_pu)``."""
        v = (self.v if v_start is None else v_start).copy()
        if self.engine == "klu":
            return self._solve_klu(sbus_pu, v)
        va, vm = np.angle(v), np.abs(v)
        pvpq, pq = self.pvpq, self.pq
        npvpq = len(pvpq)

        def mismatch(v):
            mis = v * np.conj(self._ybus_v(v)) - sbus_pu
            return np.r_[mis[pvpq].real, mis[pq].imag]

        f = mismatch(v)
        norm = np.abs(f).max(initial=0.0)
        it = 0
        while norm >= self.tolerance_pu and it < self.max_iterations:
            it += 1
            dx = spla.splu(self.jacobian(v)).solve(-f)
            va[pvpq] += dx[:npvpq]
            vm[pq] += dx[npvpq:]
            v = vm * np.exp(1j * va)
            f = mismatch(v)
            norm = np.abs(f).max(initial=0.0)
            if not np.isfinite(norm):
                break
        return bool(norm < self.tolerance_pu), it, v, float(norm)

    def _solve_klu(self, sbus_pu: np.ndarray, v: np.ndarray
                   ) -> tuple[bool, int, np.ndarray, float]:
        ref, pv, pq = self._klu_ids
        try:
            ok = bool(self._klu.compute_pf(self._ybus_csc, v, sbus_pu, ref, self._slack_weights,
                                           pv, pq, self.max_iterations, self.tolerance_pu))
        except RuntimeError:  # singular Jacobian and similar numerical failures
            return False, self.max_iterations, v, np.inf
        v = np.asarray(self._klu.get_V(), dtype=complex)
        it = int(self._klu.get_nb_iter())
        mis = v * np.conj(self._ybus_v(v)) - sbus_pu
        norm = max(np.abs(mis[self.pvpq].real).max(initial=0.0),
                   np.abs(mis[self.pq].imag).max(initial=0.0))
        ok = ok and bool(np.isfinite(norm))
        return ok, it, v, float(norm)

    def run(self, load_p_mw, load_q_mvar, sgen_p_mw, sgen_q_mvar=None, *,
            check_topology: bool = True) -> PowerFlowResult:
        """AC power flow for the tracked elements' powers (arrays in construction order;
        ``sgen_q_mvar`` None: 0). Never raises for non-convergence."""
        if check_topology and self.topology_changed():
            self._write_powers(load_p_mw, load_q_mvar, sgen_p_mw, sgen_q_mvar)
            try:
                self.reinit()
            except FastPowerFlowError:
                self._topo = self._topology()  # the new topology; retry after a change only
                return self._failed(0, np.inf)
        s = self.sbus(load_p_mw, load_q_mvar, sgen_p_mw, sgen_q_mvar)
        ok, it, v, norm = self.solve(s)
        if not ok:
            return self._failed(it, norm)
        self.v, self.converged, self._sbus = v, True, s
        self._solution_id += 1
        vm, loading, p_loss = self._branch_results(v)
        s_calc = v[self.ref] * np.conj(self._ybus_ref @ v)
        p_slack = float((s_calc - s[self.ref]).real.sum() * self.base_mva)
        return PowerFlowResult(True, it, vm, loading, p_slack, p_loss, norm)

    def run_net(self, *, check_topology: bool = True) -> PowerFlowResult:
        """:meth:`run` with the tracked elements' powers read from ``self.net``."""
        load = self.net.load.loc[self.load_index]
        sgen = self.net.sgen.loc[self.sgen_index]
        return self.run(load["p_mw"].to_numpy(float), load["q_mvar"].to_numpy(float),
                        sgen["p_mw"].to_numpy(float), sgen["q_mvar"].to_numpy(float),
                        check_topology=check_topology)

    def _write_powers(self, load_p, load_q, sgen_p, sgen_q) -> None:
        self.net.load.loc[self.load_index, "p_mw"] = np.asarray(load_p, float)
        self.net.load.loc[self.load_index, "q_mvar"] = np.asarray(load_q, float)
        self.net.sgen.loc[self.sgen_index, "p_mw"] = np.asarray(sgen_p, float)
        self.net.sgen.loc[self.sgen_index, "q_mvar"] = 0.0 if sgen_q is None else \
            np.asarray(sgen_q, float)

    def _failed(self, it: int, norm: float) -> PowerFlowResult:
        self.v, self.converged = self._v0.copy(), False  # next call: start from the init
        self._solution_id += 1
        nan_v = np.full(len(self.bus_row), np.nan)
        nan_l = np.full(len(self.branch_keys), np.nan)
        return PowerFlowResult(False, it, nan_v, nan_l, np.nan, np.nan, float(norm))

    def _branch_results(self, v: np.ndarray):
        i_f = self._yf @ v
        i_t = self._yt @ v
        s_f = v[self._f_bus] * np.conj(i_f)
        s_t = v[self._t_bus] * np.conj(i_t)
        ratio_f = np.abs(i_f) * self._k_from
        ratio_t = np.abs(i_t) * self._k_to
        sign = np.where(s_f.real >= 0.0, 1.0, -1.0)
        loading = sign * np.where(ratio_f >= ratio_t, ratio_f, ratio_t)
        p_loss = float((s_f.real + s_t.real).sum() * self.base_mva)
        return np.abs(v[self.bus_row]), loading, p_loss

    # ------------------------------------------------------------ sensitivities
    def sensitivities(self, injection_buses) -> Sensitivities:
        """VTDF/LTDF at the last converged solution, as :func:`sensitivity.compute` (p.u.
        per MW, % per MW); the Jacobian at the converged voltages is factorised once per
        solution and reused for further calls (e.g. other injection buses)."""
        if not self.converged:
            raise FastPowerFlowError("no converged power flow to linearise")
        injection_buses = np.asarray(injection_buses, dtype=np.int64)
        rows_r, cols, n_cols, inverse, same = self._injection_columns(injection_buses)
        v = self.v
        if self._lu is None or self._lu[0] != self._solution_id:
            self._lu = (self._solution_id, BlockLU(self.jacobian(v)))
        x = self._lu[1].solve_unit(rows_r, cols, 1.0 / self.base_mva, n_cols)

        # VTDF: the Vm unknowns of PQ buses (0 at slack and PV buses)
        vrow = self._vm_unknown_rows()
        vtdf = x[np.maximum(vrow, 0)]
        vtdf[vrow < 0] = 0.0
        # LTDF: d|I|/dx = Re(conj(I)/|I| * Y * dV/dx) on the reported side, one real sparse
        # matrix G (branches x unknowns) with dV/dVa = jV, dV/dVm = V/|V|
        i_f = self._yf @ v
        i_t = self._yt @ v
        ratio_f = np.abs(i_f) * self._k_from
        ratio_t = np.abs(i_t) * self._k_to
        side_from = ratio_f >= ratio_t
        sign = np.where((v[self._f_bus] * np.conj(i_f)).real >= 0.0, 1.0, -1.0)
        loading = sign * np.where(side_from, ratio_f, ratio_t)
        w_f = np.where(side_from, _unit_conj(i_f) * sign * self._k_from, 0.0)
        w_t = np.where(side_from, 0.0, _unit_conj(i_t) * sign * self._k_to)
        ltdf = self._ltdf_matrix(v, side_from, w_f, w_t) @ x
        return Sensitivities(
            injection_buses=injection_buses, bus_index=self.bus_index,
            branches=self.branch_keys, vm_pu=np.abs(v[self.bus_row]),
            loading_percent=loading,
            # the columns in the order asked for (already so for sorted distinct buses)
            vtdf=vtdf if same else vtdf[:, inverse], ltdf=ltdf if same else ltdf[:, inverse])

    def _injection_columns(self, injection_buses: np.ndarray) -> tuple:
        """(SuperLU rows, block columns and their number, the map back to the buses asked
        for, whether that map is the identity) of unit injections at ``injection_buses``;
        the last answer is kept (a DSO asks for the same buses at every point)."""
        key = injection_buses.tobytes()
        memo = self._inj_memo
        if memo is not None and memo[0] == key:
            return memo[1]
        lookup = self.model.bus_lookup
        ok = (injection_buses >= 0) & (injection_buses < len(lookup))
        rows = np.where(ok, lookup[np.clip(injection_buses, 0, len(lookup) - 1)], -1)
        in_system = np.isin(injection_buses, self.bus_index)
        if not in_system.all():
            bad = injection_buses[~in_system][0]
            raise ValueError(f"injection bus {bad} is not an in-service bus of the grid")
        pos = np.full(self.n_bus, -1, dtype=np.int64)
        pos[self.pvpq] = np.arange(len(self.pvpq))
        uniq, inverse = np.unique(rows, return_inverse=True)
        cols = np.flatnonzero(pos[uniq] >= 0)  # an injection at the slack changes nothing
        same = len(inverse) == len(uniq) and bool(np.all(inverse == np.arange(len(uniq))))
        out = (pos[uniq[cols]], cols, len(uniq), inverse, same)
        self._inj_memo = (key, out)
        return out

    def _vm_unknown_rows(self) -> np.ndarray:
        """Per reported bus, its Vm unknown's row in the Newton system (-1: none)."""
        if self._vrow is None:
            pos_m = np.full(self.n_bus, -1, dtype=np.int64)
            pos_m[self.pq] = len(self.pvpq) + np.arange(len(self.pq))
            self._vrow = pos_m[self.bus_row]
        return self._vrow

    def _ltdf_matrix(self, v: np.ndarray, side_from: np.ndarray, w_f: np.ndarray,
                     w_t: np.ndarray) -> sp.csr_matrix:
        """G = Re((diag(w_f) Yf + diag(w_t) Yt) D) with D = dV/dx (one entry per column),
        without scipy's sparse products: the same matrix as :meth:`_ltdf_matrix_scipy`
        bit for bit, entry order included (``tests/test_dsofast.py``). Branch b's row of G
        is that of ``Yf D`` (side from) or ``Yt D`` (side to), empty for a zero weight, in
        the order scipy gives it (:meth:`_ltdf_rows`), each entry the very same products
        ``Re((w[b] * Y[b, n]) * D[n, x])``."""
        rows = self._ltdf_rows()
        if rows is None:   # Yf / Yt with duplicate entries: scipy sums them first
            return self._ltdf_matrix_scipy(v, w_f, w_t)
        (cnt_f, row_f, ind_f, y_f), (cnt_t, row_t, ind_t, y_t) = rows
        w = np.where(side_from, w_f, w_t)
        on = w != 0
        take_f, take_t = side_from & on, ~side_from & on
        indptr = np.zeros(len(w) + 1, dtype=np.int64)
        np.cumsum(np.where(take_f, cnt_f, 0) + np.where(take_t, cnt_t, 0), out=indptr[1:])
        sel_f, sel_t = take_f[row_f], take_t[row_t]
        row = np.concatenate((row_f[sel_f], row_t[sel_t]))
        order = np.argsort(row, kind="stable")   # each row from one side only
        row = row[order]
        ind = np.concatenate((ind_f[sel_f], ind_t[sel_t]))[order]
        y = np.concatenate((y_f[sel_f], y_t[sel_t]))[order]
        dvec = np.r_[1j * v[self.pvpq], (v / np.abs(v))[self.pq]]
        data = _real_of_products(w[row], y, dvec[ind])
        return sp.csr_matrix((data, ind, indptr), shape=(len(w), self._pattern.size))

    def _ltdf_rows(self) -> tuple | None:
        """Per side (from, to): each branch's entry count, and per entry its branch, its
        column of G (in scipy's order within the row) and its admittance ``Y[b, n]``; None
        when Yf or Yt holds duplicate entries. Built once per model with scipy."""
        if self._ltdf_layout is None:
            if not (self._yf.has_canonical_format and self._yt.has_canonical_format):
                self._ltdf_layout = (None,)
                return None
            n_br = self._yf.shape[0]
            ones, zeros = np.ones(n_br, complex), np.zeros(n_br, complex)
            bus_of_col = np.r_[self.pvpq, self.pq]
            out = []
            for ymat, wf, wt in ((self._yf, ones, zeros), (self._yt, zeros, ones)):
                g = self._ltdf_matrix_scipy(self.v, wf, wt)
                cnt = np.diff(g.indptr)
                row = np.repeat(np.arange(n_br), cnt)
                ind = g.indices.astype(np.int64)
                out.append((cnt, row, ind, np.asarray(ymat[row, bus_of_col[ind]]).ravel()))
            self._ltdf_layout = (tuple(out),)
        return self._ltdf_layout[0]

    def _ltdf_matrix_scipy(self, v: np.ndarray, w_f: np.ndarray, w_t: np.ndarray
                           ) -> sp.csr_matrix:
        """:meth:`_ltdf_matrix` by scipy's sparse products (the reference)."""
        nb, n_x = self.n_bus, self._pattern.size
        d = sp.csr_matrix((np.r_[1j * v[self.pvpq], (v / np.abs(v))[self.pq]],
                           (np.r_[self.pvpq, self.pq], np.arange(n_x))), shape=(nb, n_x))
        g = (sp.diags(w_f) @ self._yf + sp.diags(w_t) @ self._yt) @ d
        return sp.csr_matrix(g.real)


def _real_of_products(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``Re((a * b) * c)`` elementwise in real arithmetic, one rounding per operation, as
    scipy's sparse products compute it (numpy's complex multiply may fuse multiply-adds,
    one unit in the last place apart)."""
    ar, ai, br, bi = a.real, a.imag, b.real, b.imag
    pr = ar * br - ai * bi
    pi = ar * bi + ai * br
    return pr * c.real - pi * c.imag


def _unit_conj(i: np.ndarray) -> np.ndarray:
    """conj(I) / |I| (0 where no current flows: d|I| is taken as 0 there, as in
    :func:`flexcore.grid.sensitivity.compute`)."""
    mag = np.abs(i)
    return np.divide(np.conj(i), mag, out=np.zeros_like(i), where=mag > 1e-12)
