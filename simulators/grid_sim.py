"""GridSim: AC power flow of the DSO's grid, one ``Grid`` entity, per frame.

The power flow runs on arrays in one :class:`flexcore.grid.powerflow.ArrayPowerFlow`
(``engine``: "fast" by default, "pandapower" the reference; scenario ``[grid] engine``).

Inputs per frame: building ``P_load[MW]``, ``Q_load[MVAr]``, ``P_pv[MW]`` (BuildingSim) and
``dP[MW]`` (FPUSim: sum over the building's units of power - profile). Each building has one
load and one sgen (``simulators.district_net``); the sgen carries ``P_pv + dP``.
Outputs: bus ``Vm[pu]`` ({bus index as str: p.u.}), signed ``loading[%]`` of lines and
transformers ({"line:12" / "trafo:0": %}, flexcore.sensitivity.signed_results), totals and
``converged``. A non-converging power flow is reported (converged False, NaN results), never
raised: the co-simulation goes on.

Test-only: ``extra_load`` [[frame, MW], ...] adds an unforecast load at the LV bus of the
first transformer in those frames (see scenarios.config, [test]).
"""
from __future__ import annotations

import math

import numpy as np

from flexcore.district.clock import FrameClock
from flexcore.grid.district_grid import district_net
from simulators import FrameSimulator, meta_from_table

ATTRS_IN = (
    ("P_load[MW]", "consumption per building"),
    ("Q_load[MVAr]", "reactive consumption per building"),
    ("P_pv[MW]", "PV generation per building"),
    ("dP[MW]", "unit power minus profile, per building"),
)
ATTRS_OUT = (
    ("Vm[pu]", "voltage magnitude per bus"),
    ("loading[%]", "signed loading per line and transformer"),
    ("P_slack[MW]", "active power drawn from the upstream grid (> 0 import)"),
    ("P_loss[MW]", "active losses"),
    ("converged", "AC power flow converged"),
    ("pf_time[s]", "wall time of the power flow"),
)
META = meta_from_table({"Grid": {
    "public": True,
    "params": ["grid", "extra_load", "clock", "engine"],
    "attrs": [a for a, _ in ATTRS_IN + ATTRS_OUT],
}}, sim_type="event-based")  # event-based: every input triggers, outputs non-persistent


class GridSim(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.net = None

    def create(self, num, model, *, grid: str, extra_load: list | None = None,
               clock: dict | None = None, engine: str = "fast"):
        if num != 1 or self.net is not None:
            raise ValueError("GridSim holds exactly one Grid entity")
        import pandapower as pp

        from flexcore.grid.powerflow import ArrayPowerFlow

        self.net, ids, load_idx, sgen_idx = district_net(grid)
        self._ids = tuple(ids)
        self._pos = {b: k for k, b in enumerate(ids)}
        self._extra = {int(f): float(mw) for f, mw in (extra_load or [])}
        self.clock = FrameClock.of(clock) if clock else None  # needed with extra_load
        n = len(ids)
        if self._extra:  # tracked after the buildings' loads
            bus = int(self.net.trafo.lv_bus.iloc[0])
            extra_idx = int(pp.create_load(self.net, bus, p_mw=0.0, name="test extra load"))
            load_idx = np.r_[load_idx, extra_idx]
        self.pf = ArrayPowerFlow(self.net, engine=engine, load_index=load_idx,
                                 sgen_index=sgen_idx)
        self.pf.set(load_p_mw=np.zeros(len(load_idx)), load_q_mvar=np.zeros(len(load_idx)),
                    sgen_p_mw=np.zeros(n))
        self._n = n
        self._bus_keys = [str(b) for b in self.net.bus.index]
        self._layout()
        return [{"eid": "Grid", "type": model}]

    def _layout(self) -> None:
        """Output keys of the engine's result rows (buses not supplied: NaN)."""
        if not self.pf.run():
            self._vm_pos = None
            return
        self._branch_keys = [f"{e}:{i}" for e, i in self.pf.branch_keys()]
        self._vm_pos = self.net.bus.index.get_indexer(self.pf.bus_index())

    def _vector(self, inputs: dict, attr: str) -> np.ndarray:
        out = np.zeros(self._n)
        for values in inputs.get(attr, {}).values():
            if len(values) == self._n and tuple(values) == self._ids:  # building order
                out += np.fromiter(values.values(), float, self._n)
                continue
            for bid, v in values.items():
                out[self._pos[bid]] += v
        return out

    def set_injections(self, *, load_p, load_q, sgen_p, extra_mw: float = 0.0) -> None:
        """Arrays in building order (connection-point order of the grid)."""
        pf, n = self.pf, self._n
        pf.load_p_mw[:n] = load_p
        pf.load_q_mvar[:n] = load_q
        pf.sgen_p_mw[:] = sgen_p
        if self._extra:
            pf.load_p_mw[n] = extra_mw
        pf.changed()

    def step(self, time, inputs, max_advance):
        data = inputs.get("Grid", {})
        self.set_injections(load_p=self._vector(data, "P_load[MW]"),
                            load_q=self._vector(data, "Q_load[MVAr]"),
                            sgen_p=self._vector(data, "P_pv[MW]") + self._vector(data, "dP[MW]"),
                            extra_mw=self._extra.get(self.clock.index_at(time), 0.0)
                            if self._extra else 0.0)
        converged = self.pf.run()  # only load/sgen p, q change between frames
        dt = self.pf.last_time_s
        if converged and self._vm_pos is None:  # the initial power flow had failed
            self._layout()
        if converged:
            vm, lp = self.pf.results()
            vm_all = np.full(len(self._bus_keys), np.nan)
            vm_all[self._vm_pos] = vm
            p_slack, p_loss = self.pf.totals()
            self._out = {
                "Vm[pu]": dict(zip(self._bus_keys, vm_all.tolist())),
                "loading[%]": dict(zip(self._branch_keys, lp.tolist())),
                "P_slack[MW]": p_slack, "P_loss[MW]": p_loss,
                "converged": True, "pf_time[s]": dt,
            }
        else:
            self._out = {"Vm[pu]": {}, "loading[%]": {}, "P_slack[MW]": math.nan,
                         "P_loss[MW]": math.nan, "converged": False, "pf_time[s]": dt}
        return None


def main() -> None:
    from simulators import start_simulation

    start_simulation(GridSim())


if __name__ == "__main__":
    main()
