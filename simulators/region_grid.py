"""RegionGridSim: the whole MV+LV region in AC, one power flow per frame and round, and
the meters through which every DSO sees its own area (and nothing else).

Sim params (``world.start("RegionGrid", ...)``): ``region_file`` (pandapower JSON of the
whole region), ``units`` ({bid id: bus}: where every bidding unit sits), optional
``injections_file`` (:class:`flexcore.region.dsos.FrameInjections` of the whole region;
absent: static loads), ``step_s``, ``engine`` ("fast", the default: the fast power flow,
:class:`flexcore.region.acgrid.FastRegionGrid`; "pandapower": ``pandapower.runpp`` per
power flow, :class:`flexcore.region.study.RegionGrid`, the reference; the same results
to 1e-9 p.u., ``tests/test_region_acgrid.py``).

Models: ``Region`` (one entity; ``setpoint[MW]`` in (trigger), ``ac`` out: the round's
record: converged, the region's interface flow and the change the activation caused,
violations per area over **every** row of the area, under the base-case rule of
:mod:`flexcore.region.study`) and ``Meter`` (``create(n, "Meter", areas=[{"name", "buses",
"kind": "lv"|"mv", "mv_bus" (lv) | "areas", "trafos" (mv)}])``, ``measured`` out: the
area's bus voltages and branch loadings (branches with both ends in the area), for an LV
area its MV bus's voltage and angle (``slack_vm_pu``, ``slack_va_degree``), for the MV area
the transformers' MV-side draws per LV area (``draw_p_mw``, ``draw_q_mvar``)).

Hybrid: at each frame's time it applies the frame's injections and runs the base case
(round -1: no activation); a ``setpoint[MW]`` at the same time (``{"round", "activation_mw":
{bid: MW}}``, from the TSO over a weak connection) runs the region with that activation.
The TSO's last set-points of a frame (``"final": true``: the round it dispatched, when that
is not the round the grid ran last; ``round`` -1 and no activation: nothing dispatched)
are run the same way and recorded (``ac`` with ``final``), but not metered: the frame ends
there.
"""
from __future__ import annotations

import math
import time as _time

import numpy as np

from simulators import FrameSimulator, meta_from_table

META = meta_from_table({
    "Region": {"public": True, "params": [], "attrs": ["setpoint[MW]", "ac"],
               "trigger": ["setpoint[MW]"], "non-persistent": ["ac"]},
    "Meter": {"public": True, "params": ["areas"], "attrs": ["measured"],
              "trigger": [], "non-persistent": ["measured"]},
}, sim_type="hybrid")


class RegionGridSim(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.meters: dict[str, dict] = {}
        self._eout: dict[str, dict] = {}
        self._base_at = None

    def init(self, sid, time_resolution=1.0, *, region_file: str, units: dict,
             injections_file: str | None = None, step_s: int = 900, engine: str = "fast",
             **sim_params):
        from types import SimpleNamespace

        from flexcore.region.acgrid import REGION_ENGINES, FastRegionGrid
        from flexcore.region.dsos import FrameInjections, read_area
        from flexcore.region.study import RegionGrid

        if engine not in REGION_ENGINES:
            raise ValueError(f"RegionGridSim: engine must be one of {list(REGION_ENGINES)}, "
                             f"got {engine!r}")
        self.engine = engine

        self.step_s = int(step_s)
        net = read_area(region_file)
        self.bid_ids = list(units)
        self.bid_bus = np.array([int(units[b]) for b in self.bid_ids], np.int64)
        self.col = {b: k for k, b in enumerate(self.bid_ids)}
        self.grid = (FastRegionGrid(net, self.bid_bus) if engine == "fast" else
                     RegionGrid(SimpleNamespace(net=net), self.bid_bus))  # reads only .net
        self.injections = FrameInjections.load(injections_file) if injections_file else None
        return self.meta

    def create(self, num, model, areas: list[dict] | None = None):
        if model == "Region":
            if num != 1:
                raise ValueError("RegionGridSim holds one Region entity")
            return [{"eid": "Region", "type": model}]
        specs = list(areas or [])
        if len(specs) != num:
            raise ValueError(f"RegionGridSim.Meter: {num} meters need {num} area specs")
        net = self.grid.net
        out = []
        for s in specs:
            buses = set(int(b) for b in s["buses"])
            branches = [("line", int(i)) for i, f, t in zip(net.line.index, net.line.from_bus,
                                                             net.line.to_bus)
                        if f in buses and t in buses]
            branches += [("trafo", int(i)) for i, h, lo in zip(net.trafo.index,
                                                               net.trafo.hv_bus,
                                                               net.trafo.lv_bus)
                         if h in buses and lo in buses]
            self.meters[s["name"]] = s | {"bus_list": sorted(buses), "branches": branches}
            out.append({"eid": s["name"], "type": model})
        return out

    def step(self, time, inputs, max_advance):
        from flexcore.region.split import LV_LIMITS, MV_LIMITS
        from flexcore.region.study import _check_rows

        frame = int(time) // self.step_s
        self._eout = {}
        sp = None
        for values in inputs.get("Region", {}).get("setpoint[MW]", {}).values():
            sp = values
        t0 = _time.perf_counter()
        if self._base_at != time:
            self._base_at = time
            self.time_s = 0.0
            if self.injections is not None:
                self.injections.apply(self.grid.net, frame)
            self.base = self.grid.run(self.bid_bus, np.zeros(len(self.bid_bus)))
            if self.base.converged:   # rows of in-service elements only
                for m in self.meters.values():
                    m["bus_list"] = [b for b in m["bus_list"] if b in self.base.vm_pu]
                    m["branches"] = [b for b in m["branches"]
                                     if b in self.base.loading_percent]
            self._measure(frame, -1, self.base)
        if sp is not None:
            x = np.zeros(len(self.bid_ids))
            for b, v in sp["activation_mw"].items():
                x[self.col[b]] = float(v)
            ac = self.grid.run(self.bid_bus, x)
            k = int(sp["round"])
            final = bool(sp.get("final", False))
            if not final:
                self._measure(frame, k, ac)
            areas = {}
            if ac.converged:
                for name, m in self.meters.items():
                    lim = LV_LIMITS if m["kind"] == "lv" else MV_LIMITS
                    c = _check_rows(lim, m["bus_list"], m["branches"],
                                    np.array([ac.vm_pu[b] for b in m["bus_list"]]),
                                    np.array([ac.loading_percent[b] for b in m["branches"]]),
                                    ac, self.base)
                    areas[name] = {"violations": c.violations,
                                   "base_violations": c.base_violations, "worst": c.worst}
            self.time_s += _time.perf_counter() - t0
            t0 = _time.perf_counter()
            self._eout["Region"] = {"ac": {
                "frame": frame, "round": k, "final": final, "converged": ac.converged,
                "time_s": self.time_s,
                "activation_mw": float(x.sum()),
                "ext_grid_p_mw": ac.ext_grid_p_mw,
                "delivered_at_interface_mw": (self.base.ext_grid_p_mw - ac.ext_grid_p_mw)
                if ac.converged else math.nan,
                "violations": sum(a["violations"] for a in areas.values()),
                "areas": areas}}
        self.time_s += _time.perf_counter() - t0
        return time + self.step_s

    def _measure(self, frame: int, k: int, ac) -> None:
        for name, m in self.meters.items():
            msg: dict = {"frame": frame, "round": k, "converged": ac.converged}
            if ac.converged:
                msg |= {"buses": m["bus_list"], "vm_pu": [ac.vm_pu[b] for b in m["bus_list"]],
                        "branches": [list(b) for b in m["branches"]],
                        "loading_percent": [ac.loading_percent[b] for b in m["branches"]]}
                if m["kind"] == "lv":
                    msg["slack_vm_pu"] = ac.vm_pu[int(m["mv_bus"])]
                    msg["slack_va_degree"] = self._va_degree(int(m["mv_bus"]))
                else:
                    msg["draw_p_mw"] = [ac.trafo_p_mw[int(t)] for t in m["trafos"]]
                    msg["draw_q_mvar"] = [ac.trafo_q_mvar[int(t)] for t in m["trafos"]]
            self._eout[name] = {"measured": msg}

    def _va_degree(self, bus: int) -> float:
        """The voltage angle of ``bus`` in the last converged power flow."""
        if self.engine == "fast":
            return float(self.grid.va_degree[bus])
        return float(self.grid.net.res_bus.va_degree.at[bus])

    def get_data(self, outputs):
        return {eid: {a: self._eout[eid][a] for a in attrs if a in self._eout.get(eid, {})}
                for eid, attrs in outputs.items()}


def main() -> None:
    from simulators import start_simulation

    start_simulation(RegionGridSim())


if __name__ == "__main__":
    main()
