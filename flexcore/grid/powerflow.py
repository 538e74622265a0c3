"""One AC power-flow session over a pandapower net: recycled runs, skipped when up to date.

Between the power flows of one session only loads' and sgens' p/q change: pandapower may
then reuse its internal model and re-read the bus injections (``recycle`` with
``bus_pq``). The internal-state check in :mod:`flexcore.grid.ppinternals` guards this
against the results on every linearisation. Runs are without numba: a fresh power flow
costs ~7 ms more on Bergwald, a recycled one the same, and no process pays numba's ~6 s
compilation at start-up.

:class:`ArrayPowerFlow` is what the DSO's :class:`flexcore.dso.Linearizer` and the grid
simulator (``simulators/grid_sim.py``) use, so both solve the same way: powers as arrays, one
of two engines (:data:`ENGINES`): the fast path (:mod:`flexcore.grid.fastpf`, default) or
this module's recycled pandapower session (the reference).
"""
from __future__ import annotations

import time
from typing import Any

import pandapower as pp

#: only loads' and sgens' p/q change between the power flows of one session
RECYCLE = {"trafo": False, "gen": False, "bus_pq": True}
#: runpp options of every session (see the module doc)
PF_OPTIONS: dict[str, Any] = {"numba": False}


def run_fresh(net: Any) -> bool:
    """One power flow without recycling (e.g. on a throw-away copy); True if converged."""
    try:
        pp.runpp(net, **PF_OPTIONS)
    except pp.LoadflowNotConverged:
        return False
    return True


class PowerFlowSession:
    """Owns ``net`` for its power flows.

    Call :meth:`changed` after writing new injections (loads, sgens) into ``net``;
    :meth:`run` then solves again, recycling pandapower's internal model, and is free when
    ``net`` already holds the result of the current injections. Call :meth:`invalidate`
    after running power flows on ``net`` by other means (e.g. finite differences) or after
    changing anything but load/sgen p, q: the next run rebuilds the internal model.
    """

    def __init__(self, net: Any) -> None:
        self.net = net
        self._recycle_ok = False
        self._solved = False  # net's results belong to the current injections
        self.last_time_s = 0.0

    @property
    def solved(self) -> bool:
        """``net`` holds the converged power flow of the current injections."""
        return self._solved

    def changed(self) -> None:
        """The injections changed: the next :meth:`run` solves again (recycled)."""
        self._solved = False

    def invalidate(self) -> None:
        """Forget the result and pandapower's internal model."""
        self._solved = self._recycle_ok = False

    def mark_solved(self) -> None:
        """``net`` holds the converged power flow of the current injections (run by other
        means, e.g. a fresh ``pp.runpp``); the next recycled run rebuilds the model."""
        self._solved, self._recycle_ok = True, False

    def run(self) -> bool:
        """AC power flow of the current injections; True if converged. Non-convergence is
        returned, never raised (the internal model is rebuilt next time)."""
        if self._solved:
            self.last_time_s = 0.0
            return True
        t0 = time.perf_counter()
        try:
            pp.runpp(self.net, recycle=RECYCLE if self._recycle_ok else None, **PF_OPTIONS)
            self._recycle_ok = self._solved = True
        except pp.LoadflowNotConverged:
            self._recycle_ok = self._solved = False
        self.last_time_s = time.perf_counter() - t0
        return self._solved


# --------------------------------------------------------------------------- engines
#: "fast": :class:`flexcore.grid.fastpf.FastPowerFlow` (compiled Newton, one pandapower run
#: per topology); "pandapower": recycled ``pp.runpp`` (the reference)
ENGINES = ("fast", "pandapower")
DEFAULT_ENGINE = "fast"


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"power-flow engine must be one of {list(ENGINES)}, got {engine!r}")
    return engine


class ArrayPowerFlow:
    """Repeated AC power flows of ``net`` for load and sgen powers given as arrays.

    ``load_index`` / ``sgen_index`` (default: every row) are the pandapower indices whose
    ``p_mw``/``q_mvar`` :meth:`set` takes, in that order; everything else in ``net`` is
    frozen (call :meth:`rebuild` after changing it). Results come in the row order of
    :func:`flexcore.grid.sensitivity.signed_results`.

    ``engine="fast"`` solves with :class:`~flexcore.grid.fastpf.FastPowerFlow` on arrays
    (``net``'s tables are written only by :meth:`sync_net`); where the fast path does not
    support the grid (e.g. voltage-dependent loads) it falls back to ``"pandapower"`` and
    keeps the reason in :attr:`fallback_reason`. ``engine="pandapower"`` writes the powers
    into ``net`` and runs a recycled ``pp.runpp`` (:class:`PowerFlowSession`).
    ``net`` is owned by this object (not copied).
    """

    def __init__(self, net: Any, *, engine: str = DEFAULT_ENGINE, load_index: Any = None,
                 sgen_index: Any = None) -> None:
        import numpy as np

        self.net = net
        self.requested_engine = check_engine(engine)
        self.load_index = np.asarray(net.load.index if load_index is None else load_index,
                                     dtype=np.int64)
        self.sgen_index = np.asarray(net.sgen.index if sgen_index is None else sgen_index,
                                     dtype=np.int64)
        self._load_pos = net.load.index.get_indexer(self.load_index)
        self._sgen_pos = net.sgen.index.get_indexer(self.sgen_index)
        self.load_p_mw = np.zeros(len(self._load_pos))
        self.load_q_mvar = np.zeros(len(self._load_pos))
        self.sgen_p_mw = np.zeros(len(self._sgen_pos))
        self.sgen_q_mvar = np.zeros(len(self._sgen_pos))
        self.session = PowerFlowSession(net)
        self.last_time_s = 0.0
        self._net_synced = True  # net's tables hold the arrays' values
        self.rebuild()

    # ----------------------------------------------------------------- set-up
    def rebuild(self) -> None:
        """(Re-)build the engine from ``net`` as it is now (after a change of anything but
        the tracked powers: topology, parameters, other elements); the tracked powers are
        read back from ``net``'s tables (after writing pending array values into them)."""
        from flexcore.grid.fastpf import FastPowerFlow, FastPowerFlowError
        from flexcore.grid.ppinternals import InternalsChanged

        self.sync_net(run=False)  # pending array values first, then read back what net holds
        net = self.net
        self.load_p_mw[:] = net.load["p_mw"].to_numpy(float)[self._load_pos]
        self.load_q_mvar[:] = net.load["q_mvar"].to_numpy(float)[self._load_pos]
        self.sgen_p_mw[:] = net.sgen["p_mw"].to_numpy(float)[self._sgen_pos]
        self.sgen_q_mvar[:] = net.sgen["q_mvar"].to_numpy(float)[self._sgen_pos]
        self.session.invalidate()
        self.engine, self.fallback_reason, self._fast = self.requested_engine, "", None
        if self.engine == "fast":
            try:
                self._fast = FastPowerFlow(self.net, load_index=self.load_index,
                                           sgen_index=self.sgen_index, copy_net=False)
            except (NotImplementedError, FastPowerFlowError, InternalsChanged) as exc:
                self.engine, self.fallback_reason = "pandapower", str(exc)
                import warnings

                warnings.warn(f"fast power flow not used, pandapower instead: {exc}",
                              stacklevel=2)
            else:  # the net holds pandapower's result of the current powers
                self.session.mark_solved()
        self._result = None  # fast engine: PowerFlowResult of the current powers
        self._net_synced = True

    # ------------------------------------------------------------- injections
    def set(self, *, load_p_mw: Any = None, load_q_mvar: Any = None, sgen_p_mw: Any = None,
            sgen_q_mvar: Any = None) -> None:
        """New tracked powers (arrays in index order; None keeps the current ones)."""
        import numpy as np

        for name, value in (("load_p_mw", load_p_mw), ("load_q_mvar", load_q_mvar),
                            ("sgen_p_mw", sgen_p_mw), ("sgen_q_mvar", sgen_q_mvar)):
            if value is not None:
                arr = getattr(self, name)
                arr[:] = np.asarray(value, float)
        self.changed()

    def changed(self) -> None:
        """The arrays ``load_p_mw`` ... were modified in place: solve again next time."""
        self._result = None
        self._net_synced = False
        self.session.changed()

    def set_slack_vm(self, vm_pu: float) -> None:
        """New voltage magnitude set point of every in-service ext_grid, without a rebuild
        on the fast engine (:meth:`FastPowerFlow.set_slack_vm`); the pandapower engine
        writes it into ``net`` and rebuilds its internal model at the next run."""
        if self._fast is not None:
            self._fast.set_slack_vm(vm_pu)
        else:
            eg = self.net.ext_grid
            eg.loc[eg.in_service.to_numpy(bool), "vm_pu"] = float(vm_pu)
        self.session.invalidate()  # net's results and pandapower's model are stale
        self._result = None

    def sync_net(self, *, run: bool = True) -> Any:
        """Write the tracked powers into ``net``'s tables and (``run``) make ``net`` hold
        pandapower's power flow of them, so that code reading ``net.res_*`` sees the
        current state; returns ``net``."""
        if not self._net_synced:
            net = self.net
            p_col, q_col = net.load.columns.get_loc("p_mw"), net.load.columns.get_loc("q_mvar")
            net.load.iloc[self._load_pos, p_col] = self.load_p_mw
            net.load.iloc[self._load_pos, q_col] = self.load_q_mvar
            p_col, q_col = net.sgen.columns.get_loc("p_mw"), net.sgen.columns.get_loc("q_mvar")
            net.sgen.iloc[self._sgen_pos, p_col] = self.sgen_p_mw
            net.sgen.iloc[self._sgen_pos, q_col] = self.sgen_q_mvar
            self._net_synced = True
            self.session.changed()
        if run:
            self.session.run()
        return self.net

    # ------------------------------------------------------------------ solve
    @property
    def solved(self) -> bool:
        """The current powers have a converged power flow."""
        if self._fast is not None:
            return self._result is not None and self._result.converged
        return self.session.solved

    def run(self) -> bool:
        """AC power flow of the current powers; True if converged (free when already
        solved). Non-convergence is returned, never raised."""
        if self._fast is None:
            self.sync_net(run=False)
            ok = self.session.run()
            self.last_time_s = self.session.last_time_s
            return ok
        if self._result is not None:
            self.last_time_s = 0.0
            return self._result.converged
        t0 = time.perf_counter()
        self._result = self._fast.run(self.load_p_mw, self.load_q_mvar, self.sgen_p_mw,
                                      self.sgen_q_mvar, check_topology=False)
        self.last_time_s = time.perf_counter() - t0
        return self._result.converged

    def _need(self) -> None:
        if not self.solved:
            raise RuntimeError("no converged power flow of the current powers (call run())")

    def results(self) -> tuple[Any, Any]:
        """(vm_pu of the supplied in-service buses, signed loading_percent of the in-service
        lines then transformers) of the last converged :meth:`run`."""
        self._need()
        if self._fast is not None:
            return self._result.vm_pu, self._result.loading_percent
        from flexcore.grid.sensitivity import signed_results

        vm, lp, _ = signed_results(self.net)
        return vm, lp

    def totals(self) -> tuple[float, float]:
        """(active power from the ext_grid(s) in MW, > 0 import; active losses of lines and
        transformers in MW) of the last converged :meth:`run`."""
        self._need()
        if self._fast is not None:
            return self._result.p_slack_mw, self._result.p_loss_mw
        net = self.net
        return (float(net.res_ext_grid.p_mw.sum()),
                float(net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum()))

    def bus_index(self) -> Any:
        """pandapower indices of the rows of ``results()[0]`` (supplied in-service buses)."""
        if self._fast is not None:
            return self._fast.bus_index
        from flexcore.grid import ppinternals

        self._need()
        return ppinternals.extract_state(self.net, check=False).bus_index

    def branch_keys(self) -> tuple[tuple[str, int], ...]:
        """``(element, index)`` of the rows of ``results()[1]``."""
        if self._fast is not None:
            return self._fast.branch_keys
        from flexcore.grid.sensitivity import signed_results

        self._need()
        return signed_results(self.net)[2]

    def sensitivities(self, injection_buses: Any) -> Any:
        """VTDF/LTDF at the last converged :meth:`run`
        (:class:`flexcore.grid.sensitivity.Sensitivities`): one factorisation of the Jacobian
        for all columns."""
        self._need()
        if self._fast is not None:
            return self._fast.sensitivities(injection_buses)
        from flexcore.grid import sensitivity

        return sensitivity.compute(self.net, injection_buses)
