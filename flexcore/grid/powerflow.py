"""One AC power-flow session over a pandapower net: recycled runs, skipped when up to date.

Between the power flows of one session only loads' and sgens' p/q change: pandapower may
then reuse its internal model and re-read the bus injections (``recycle`` with
``bus_pq``). The internal-state check in :mod:`flexcore.grid.ppinternals` guards this
against the results on every linearisation. Runs are without numba: a fresh power flow
costs ~7 ms more on Bergwald, a recycled one the same, and no process pays numba's ~6 s
compilation at start-up.

Used by the DSO's :class:`flexcore.dso.Linearizer` and by the grid simulator
(``simulators/grid_sim.py``), so both solve the same way.
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
