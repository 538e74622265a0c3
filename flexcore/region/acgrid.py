"""The whole region's AC power flow on the fast engine (:class:`flexcore.grid.fastpf.
FastPowerFlow`): what :class:`flexcore.region.study.RegionGrid` computes with
``pandapower.runpp`` (the oracle, ``tests/test_region_acgrid.py``), for the region grid of
the co-simulation (``simulators/region_grid.py``, sim param ``engine``).

One ``pp.runpp`` builds the engine; afterwards each :meth:`FastRegionGrid.run` reads the
loads' and sgens' powers from ``net``'s tables (where a new frame's injections were written)
and solves them with the engine's Newton-Raphson. A change the engine does not track
(storage powers, in-service flags, switches) rebuilds it with one ``pp.runpp``. The
results come as :class:`~flexcore.region.study.RegionAC` with the same keys, plus the
buses' voltage angles (:attr:`FastRegionGrid.va_degree`, pandapower's ``res_bus.va_degree``).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandapower as pp

from flexcore.dso.linearizer import FLEX_SGEN_NAME
from flexcore.grid.fastpf import FastPowerFlow, FastPowerFlowError
from flexcore.region.study import RegionAC

#: region grid engines: "fast" (:class:`FastRegionGrid`, default), "pandapower"
#: (:class:`flexcore.region.study.RegionGrid`, ``pp.runpp`` per power flow)
REGION_ENGINES = ("fast", "pandapower")


class FastRegionGrid:
    """The whole region with one activation sgen per bid bus (as
    :class:`~flexcore.region.study.RegionGrid`: ``net`` is a copy, the sgens are its last
    rows), solved by :class:`FastPowerFlow` (``pf_engine``: its ``engine``)."""

    def __init__(self, net: Any, buses: np.ndarray, *, pf_engine: str = "auto") -> None:
        self.net = copy.deepcopy(net)
        self.buses = np.unique(buses)
        self.sgens = np.asarray(pp.create_sgens(self.net, self.buses, p_mw=0.0,
                                                name=FLEX_SGEN_NAME))
        self._flex_pos = self.net.sgen.index.get_indexer(self.sgens)
        self.pf_engine = pf_engine
        self.fast = FastPowerFlow(self.net, copy_net=False, engine=pf_engine)
        self.va_degree: dict[int, float] = {}
        self._index_model()

    def _storage(self) -> np.ndarray:
        st = self.net.get("storage")
        return np.zeros(0) if st is None or not len(st) else \
            np.r_[st.p_mw.to_numpy(float), st.q_mvar.to_numpy(float),
                  st.in_service.to_numpy(float)]

    def _index_model(self) -> None:
        """Rows of the engine's model that the results need (after each (re)build)."""
        fast = self.fast
        st = fast.model.state
        self._stored = self._storage()
        self._bus_index = fast.bus_index.tolist()
        trafo = [bs for bs in st.branches if bs.element == "trafo"]
        self._trafo_index = [int(i) for bs in trafo for i in bs.index]
        rows = np.concatenate([bs.row for bs in trafo]) if trafo else np.zeros(0, np.int64)
        self._trafo_yf = st.yf[rows].tocsr()
        self._trafo_from = np.concatenate([bs.from_bus for bs in trafo]) if trafo else rows
        self._all_trafos = [int(i) for i in self.net.trafo.index]

    def run(self, bus: np.ndarray, x: np.ndarray) -> RegionAC:
        """The region with activation ``x`` (MW) at the buses ``bus`` (summed per bus) on
        top of the powers in ``net``'s tables."""
        net = self.net
        per_bus = np.zeros(len(self.buses))
        np.add.at(per_bus, np.searchsorted(self.buses, bus), x)
        sgen_p = net.sgen.p_mw.to_numpy(float).copy()
        sgen_p[self._flex_pos] = per_bus
        net.sgen.iloc[self._flex_pos, net.sgen.columns.get_loc("p_mw")] = per_bus
        fast = self.fast
        if not np.array_equal(self._storage(), self._stored) or fast.topology_changed():
            try:
                fast.reinit()   # one pp.runpp at the current powers
            except FastPowerFlowError:
                return self._failed()
            self._index_model()
        res = fast.run(net.load.p_mw.to_numpy(float), net.load.q_mvar.to_numpy(float),
                       sgen_p, net.sgen.q_mvar.to_numpy(float), check_topology=False)
        if not res.converged:
            return self._failed()
        v = fast.v
        s_hv = v[self._trafo_from] * np.conj(self._trafo_yf @ v) * fast.base_mva
        p_hv = dict.fromkeys(self._all_trafos, 0.0)   # out of service: 0, as pandapower
        q_hv = dict.fromkeys(self._all_trafos, 0.0)
        p_hv.update(zip(self._trafo_index, s_hv.real.tolist()))
        q_hv.update(zip(self._trafo_index, s_hv.imag.tolist()))
        self.va_degree = dict(zip(self._bus_index,
                                  np.degrees(np.angle(v[fast.bus_row])).tolist()))
        return RegionAC(True, dict(zip(self._bus_index, res.vm_pu.tolist())),
                        dict(zip(fast.branch_keys, res.loading_percent.tolist())),
                        res.p_slack_mw, p_hv, q_hv)

    def _failed(self) -> RegionAC:
        self.va_degree = {}
        return RegionAC(False, {}, {}, math.nan)
