"""GridSim: AC power flow (pandapower) of the DSO's grid, one ``Grid`` entity, per frame.

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
    "params": ["grid", "extra_load", "clock"],
    "attrs": [a for a, _ in ATTRS_IN + ATTRS_OUT],
}}, sim_type="event-based")  # event-based: every input triggers, outputs non-persistent


class GridSim(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.net = None

    def create(self, num, model, *, grid: str, extra_load: list | None = None,
               clock: dict | None = None):
        if num != 1 or self.net is not None:
            raise ValueError("GridSim holds exactly one Grid entity")
        import pandapower as pp

        from flexcore.grid.powerflow import PowerFlowSession

        self.net, ids, self._load_idx, self._sgen_idx = district_net(grid)
        self._pos = {b: k for k, b in enumerate(ids)}
        self._extra = {int(f): float(mw) for f, mw in (extra_load or [])}
        self.clock = FrameClock.of(clock) if clock else None  # needed with extra_load
        self._extra_idx = None
        if self._extra:
            bus = int(self.net.trafo.lv_bus.iloc[0])
            self._extra_idx = int(pp.create_load(self.net, bus, p_mw=0.0, name="test extra load"))
        self.session = PowerFlowSession(self.net)
        self._bus_keys = [str(b) for b in self.net.bus.index]
        return [{"eid": "Grid", "type": model}]

    def _vector(self, inputs: dict, attr: str) -> np.ndarray:
        out = np.zeros(len(self._pos))
        for values in inputs.get(attr, {}).values():
            for bid, v in values.items():
                out[self._pos[bid]] += v
        return out

    def set_injections(self, *, load_p, load_q, sgen_p, extra_mw: float = 0.0) -> None:
        """Arrays in building order (connection-point order of the grid)."""
        net = self.net
        net.load.loc[self._load_idx, "p_mw"] = load_p
        net.load.loc[self._load_idx, "q_mvar"] = load_q
        net.sgen.loc[self._sgen_idx, "p_mw"] = sgen_p
        if self._extra_idx is not None:
            net.load.at[self._extra_idx, "p_mw"] = extra_mw
        self.session.changed()

    def step(self, time, inputs, max_advance):
        from flexcore.grid.sensitivity import signed_results

        data = inputs.get("Grid", {})
        self.set_injections(load_p=self._vector(data, "P_load[MW]"),
                            load_q=self._vector(data, "Q_load[MVAr]"),
                            sgen_p=self._vector(data, "P_pv[MW]") + self._vector(data, "dP[MW]"),
                            extra_mw=self._extra.get(self.clock.index_at(time), 0.0)
                            if self._extra else 0.0)
        converged = self.session.run()  # recycled: only load/sgen p, q change
        dt = self.session.last_time_s
        if converged:
            vm, lp, keys = signed_results(self.net)
            self._out = {
                "Vm[pu]": dict(zip(self._bus_keys, self.net.res_bus.vm_pu.to_numpy().tolist())),
                "loading[%]": {f"{e}:{i}": float(x) for (e, i), x in zip(keys, lp)},
                "P_slack[MW]": float(self.net.res_ext_grid.p_mw.sum()),
                "P_loss[MW]": float(self.net.res_line.pl_mw.sum() + self.net.res_trafo.pl_mw.sum()),
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
