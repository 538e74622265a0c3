"""DSOAgent: the DSO's side of every frame. Holds the only grid model among the agents.

Message sequence inside one frame (mosaik time t; tiers t:0, t:1, ... of the same-time loop
formed by ``FPUSim -> DSOAgent -> TSOAgent -(weak)-> DSOAgent`` and ``TSOAgent -(weak)->
FPUSim`` inside one ``world.group()``)::

    t:0  BuildingSim, FPUSim --(load/PV, dP_base, offers)--> DSO
         DSO: set fixed injections (forecast = actual profile + unit baselines);
              re-linearise at every operating point if due (RelinearizationSchedule: every
              `relinearize_every` frames, or sum|dP_fix| moved more than
              `relinearize_threshold_mw` since the last time, or a new day); otherwise
              recompute only the zero point (this frame's base case, so that a zero
              request is exact) and reuse the others; publish the package (round 0).
              A frame whose points all fail to converge gets the verdict
              ``dso_failed`` at once and the run goes on.
         DSO --PackageMessage(round 0)--> TSO ;  TSO clears --ClearingMessage--> DSO
    t:k  DSO: the round policy (flexcore.dso.refinement.RefinementSession): AC check of
              the clearing against the DSO's own prediction; accurate and safe, or
              k == refine_rounds: final VerdictMessage (optimal|unsafe|<clearing status>,
              dispatch). Otherwise: refine (cleared activation as a new operating point),
              publish PackageMessage(round k+1) and the TSO clears again.
    t:k' TSO --(set-points, zero unless dispatch)--> FPUSim --(dP)--> GridSim

At the final verdict of a frame with a request the DSO also reports
the AC state with every bid in the request's direction fully active (``report
["all_active"]``, the source's Figure 5), so that the run folder shows what the clearing
avoided. The request comes with the TSO's clearing; it is the TSO's to share.

Safety: a clearing violating an AC limit after the last round gets status ``unsafe`` and
is not dispatched unless ``dispatch_unsafe`` is set (then it is dispatched and flagged).
Packages cross as folder paths (flexcore.exchange.package format: npz + JSON manifest with a
SHA-256, never pickles) when ``exchange="files"`` (required with separate processes), or as
the SensitivityPackage object itself in one process (``"memory"``: no file round trip).
Either way the TSO gets only numbers and opaque keys.
"""
from __future__ import annotations

import time as _time
from pathlib import Path

import mosaik_api_v3
import numpy as np

from flexcore.district.clock import FrameClock
from flexcore.exchange.messages import ClearingMessage, PackageMessage, VerdictMessage, from_wire
from simulators import FrameSimulator, meta_from_table

ATTRS_IN = (
    ("P_load[MW]", "consumption per building"), ("Q_load[MVAr]", "reactive consumption"),
    ("P_pv[MW]", "PV per building"), ("dP_base[MW]", "unit baselines - profile, per building"),
    ("offers", "bids of the frame"), ("from_tso", "clearing message of the TSO"),
)
ATTRS_OUT = (("to_tso", "package or verdict message"), ("report", "frame report (DSO side)"))
META = meta_from_table({"DSO": {
    "public": True,
    "params": ["grid", "catalog", "run_dir", "seed", "dso", "clock", "exchange"],
    "attrs": [a for a, _ in ATTRS_IN + ATTRS_OUT],
}}, sim_type="event-based")  # event-based: every input triggers, outputs non-persistent


def _merge(inputs: dict, attr: str) -> dict:
    out: dict = {}
    for values in inputs.get(attr, {}).values():
        out.update(values)
    return out


class DSOAgent(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.lin = None

    def create(self, num, model, *, grid: str, catalog: list[dict], run_dir: str, seed: int,
               dso: dict, clock: dict, exchange: str = "files"):
        if num != 1 or self.lin is not None:
            raise ValueError("DSOAgent holds exactly one DSO entity")
        from flexcore.dso import Linearizer, RefinementPolicy, RefinementSession
        from flexcore.dso import RelinearizationSchedule as Schedule
        from flexcore.dso.frame import PublicationAudit, catalog_bids
        from flexcore.exchange.limits import Limits
        from flexcore.grid.district_grid import BuildingInjections, district_net

        if exchange not in ("files", "memory"):
            raise ValueError(f"exchange must be 'files' or 'memory', got {exchange!r}")
        net, *buildings = district_net(grid)
        self.inj = BuildingInjections(net, *buildings)
        # deterministic salt (same seed -> same keys); the key map stays with the DSO
        self.lin = Linearizer(net, catalog_bids(catalog, self.inj.bus_of),
                              salt=f"bergwald-{seed}", limits=Limits.from_dict(dso["limits"]))
        self.cfg, self.exchange, self.clock = dso, exchange, FrameClock.of(clock)
        self.session = RefinementSession(self.lin, policy=RefinementPolicy(
            max_rounds=dso["refine_rounds"], tol_vm_mae_pu=dso["tol_vm_mae_pu"],
            tol_loading_mae_percent=dso["tol_loading_mae_percent"],
            dispatch_unsafe=dso["dispatch_unsafe"]))
        self.schedule = Schedule(dso["relinearize_every"], dso["relinearize_threshold_mw"])
        self.audit = PublicationAudit(self.lin)
        self.dir = Path(run_dir)
        (self.dir / "dso").mkdir(parents=True, exist_ok=True)
        self.lin.keymap.save(self.dir / "dso" / "KEYMAP.json")  # private: for the validator
        self._points: tuple = ()
        return [{"eid": "DSO", "type": model}]

    def _publish(self, package, frame: int, round_: int) -> dict:
        """The package message: the object itself (in-process runs) or a folder path."""
        if round_ == 0:
            self.audit.published(frame, self.clock.frames[frame].day_type, package)
        if self.exchange == "memory":
            return PackageMessage(frame, round_, package=package).to_wire()
        from flexcore.exchange.package import save_package

        path = save_package(package, self.dir / "exchange" / f"r{round_}")
        return PackageMessage(frame, round_, path=str(path)).to_wire()

    def step(self, time, inputs, max_advance):
        data = inputs.get("DSO", {})
        frame = self.clock.index_at(time)
        self._out = {}
        if "offers" in data:
            self._new_frame(frame, data)
        for wire in data.get("from_tso", {}).values():
            msg = from_wire(wire)
            if not isinstance(msg, ClearingMessage):
                raise ValueError(f"DSOAgent expects clearing messages, got {type(msg).__name__}")
            self._on_clearing(frame, msg)
        return None

    def _new_frame(self, frame: int, data: dict) -> None:
        from flexcore.dso import PointNotConverged
        from flexcore.dso.frame import offer_arrays, round0_package

        t0 = _time.perf_counter()
        inj = self.inj.apply(p_load_mw=_merge(data, "P_load[MW]"),
                             q_load_mvar=_merge(data, "Q_load[MVAr]"),
                             p_pv_mw=_merge(data, "P_pv[MW]"),
                             dp_base_mw=_merge(data, "dP_base[MW]"))
        self.lin.set_base(load_p_mw=inj.load_p_mw, load_q_mvar=inj.load_q_mvar,
                          sgen_p_mw=inj.sgen_p_mw)
        offers = [o for batch in data["offers"].values() for o in batch]
        self.lin.set_bid_volumes(*offer_arrays(self.lin.bids.ids, offers))
        plan = self.schedule.decide(frame, inj.fix_mw, new_day=self.clock.new_day(frame))
        self.report = {"frame": frame, "relinearized": bool(plan.due),
                       "fix_moved_mw": plan.moved_mw, "rounds": 0, "points": 0}
        try:
            r0 = round0_package(self.lin, self._points, due=plan.due,
                                operating_points=self.cfg["operating_points"],
                                screening=self.cfg["screening"])
        except PointNotConverged as exc:  # recorded; the frame is not cleared
            self.report.update(dso_time_s=_time.perf_counter() - t0)
            self._verdict(frame, self.session.failed(str(exc)))
            return
        self._points = r0.points
        if r0.message:
            self.report["message"] = r0.message
        if plan.due:
            self.schedule.done(frame, inj.fix_mw)
        self.report["dso_time_s"] = _time.perf_counter() - t0
        self._out["to_tso"] = self._publish(self.session.open(r0.package), frame, 0)

    def _on_clearing(self, frame: int, msg: ClearingMessage) -> None:
        from flexcore.dso import Verdict
        from flexcore.dso.frame import all_active_state

        t0 = _time.perf_counter()
        if msg.round == 0:
            self.audit.cleared(frame, msg.clearing.request_mw)
        self.report.update(rounds=msg.round, points=self.session.package.m)
        step = self.session.on_clearing(msg.clearing)
        v = self.session.records[-1].validation
        if v is not None:
            self.report.update(dso_vm_mae_pu=v.vm_mae_pu,
                               dso_loading_mae_percent=v.loading_mae_percent,
                               dso_violations=len(v.violations), ac_converged=v.converged)
        if isinstance(step, Verdict):
            if v is not None and v.max_violation:
                self.report["worst_violation"] = v.max_violation
            direction = float(np.sign(msg.clearing.request_mw))
            if direction:
                self.report["all_active"] = all_active_state(self.lin, direction)
            self._verdict(frame, step)
        else:
            self._out["to_tso"] = self._publish(step, frame, msg.round + 1)
        self.report["dso_time_s"] += _time.perf_counter() - t0

    def _verdict(self, frame: int, v) -> None:
        self._out["to_tso"] = VerdictMessage(frame, v.rounds, v.verdict, safe=v.safe,
                                             dispatch=v.dispatch, message=v.message).to_wire()
        self.report.update(status=str(v.verdict), safe=v.safe, dispatched=v.dispatch)
        if v.message:
            self.report["message"] = v.message
        self._out["report"] = self.report

    def finalize(self) -> None:
        """The run folder's ``dso/audit.json``: the audit of the published packages."""
        from flexcore.runs import write_json

        write_json(self.dir / "dso" / "audit.json", self.audit.result())


def main() -> None:
    mosaik_api_v3.start_simulation(DSOAgent())


if __name__ == "__main__":
    main()
