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
        from flexcore.dso import (
            Linearizer,
            RefinementPolicy,
            RefinementSession,
            RelinearizationSchedule,
        )
        from flexcore.exchange.bids import BidTable
        from flexcore.exchange.limits import Limits
        from flexcore.grid.district_grid import district_net

        if exchange not in ("files", "memory"):
            raise ValueError(f"exchange must be 'files' or 'memory', got {exchange!r}")
        net, ids, load_idx, sgen_idx = district_net(grid)
        self._pos = {b: k for k, b in enumerate(ids)}
        bus_of_building = dict(zip(ids, net.load.loc[load_idx, "bus"].to_numpy().tolist()))
        self.ids = tuple(c["bid_id"] for c in catalog)
        self._col = {b: k for k, b in enumerate(self.ids)}
        bids = BidTable(ids=self.ids, volume_mw=np.zeros(len(self.ids)),
                        price_eur_per_mwh=np.zeros(len(self.ids)),
                        bus=np.array([bus_of_building[c["building_id"]] for c in catalog],
                                     np.int64))
        # deterministic salt (same seed -> same keys); the key map stays with the DSO
        self.lin = Linearizer(net, bids, salt=f"bergwald-{seed}",
                              limits=Limits.from_dict(dso["limits"]))
        self.cfg, self.exchange, self.clock = dso, exchange, FrameClock.of(clock)
        self.session = RefinementSession(self.lin, policy=RefinementPolicy(
            max_rounds=dso["refine_rounds"], tol_vm_mae_pu=dso["tol_vm_mae_pu"],
            tol_loading_mae_percent=dso["tol_loading_mae_percent"],
            dispatch_unsafe=dso["dispatch_unsafe"]))
        self.schedule = RelinearizationSchedule(dso["relinearize_every"],
                                                dso["relinearize_threshold_mw"])
        # building loads and sgens by position in their tables; other loads keep their
        # values, as in GridSim (a SimBench grid may hold loads that are no building)
        self._sgen_pos, self._n_sgen = net.sgen.index.get_indexer(sgen_idx), len(net.sgen)
        self._load_pos = net.load.index.get_indexer(load_idx)
        self._load_p0 = net.load["p_mw"].to_numpy(float).copy()
        self._load_q0 = net.load["q_mvar"].to_numpy(float).copy()
        self.dir = Path(run_dir)
        (self.dir / "dso").mkdir(parents=True, exist_ok=True)
        self.lin.keymap.save(self.dir / "dso" / "KEYMAP.json")  # private: for the validator
        self._points: tuple = ()
        return [{"eid": "DSO", "type": model}]

    def _frame_of(self, time: int) -> int:
        return self.clock.index_at(time)

    def _new_day(self, frame: int) -> bool:
        return self.clock.new_day(frame)

    def _vector(self, values: dict) -> np.ndarray:
        out = np.zeros(len(self._pos))
        for b, v in values.items():
            out[self._pos[b]] = v
        return out

    def _publish(self, package, frame: int, round_: int) -> dict:
        """The package message: the object itself (in-process runs) or a folder path. With
        ``[dso] privacy = "exact"`` (default) the DSO keeps ``package`` (format 1) and
        publishes its hardened form (format 2, flexcore.dso.privacy.harden)."""
        if self.cfg.get("privacy", "exact") == "exact":
            from flexcore.dso.privacy import harden

            box = self.lin.bids.subset(package.columns)
            package, _ = harden(package, lower_mw=box.lower_mw, upper_mw=box.upper_mw)
        if self.exchange == "memory":
            return PackageMessage(frame, round_, package=package).to_wire()
        from flexcore.exchange.package import save_package

        path = save_package(package, self.dir / "exchange" / f"r{round_}")
        return PackageMessage(frame, round_, path=str(path)).to_wire()

    # ----------------------------------------------------------------- step
    def step(self, time, inputs, max_advance):
        data = inputs.get("DSO", {})
        frame = self._frame_of(time)
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

        t0 = _time.perf_counter()
        load_p, load_q = self._load_p0.copy(), self._load_q0.copy()
        load_p[self._load_pos] = building_p = self._vector(_merge(data, "P_load[MW]"))
        load_q[self._load_pos] = self._vector(_merge(data, "Q_load[MVAr]"))
        sgen_b = self._vector(_merge(data, "P_pv[MW]")) + self._vector(_merge(data, "dP_base[MW]"))
        sgen = np.zeros(self._n_sgen)
        sgen[self._sgen_pos] = sgen_b
        self.lin.set_base(load_p_mw=load_p, load_q_mvar=load_q, sgen_p_mw=sgen)
        vol, price = np.zeros(len(self.ids)), np.zeros(len(self.ids))
        for offers in data["offers"].values():
            for o in offers:
                k = self._col[o["bid_id"]]
                vol[k], price[k] = o["volume_mw"], o["price_eur_per_mwh"]
        self.lin.set_bid_volumes(vol, price)
        fix = sgen_b - building_p
        plan = self.schedule.decide(frame, fix, new_day=self._new_day(frame))
        due = plan.due
        self.report = {"frame": frame, "relinearized": bool(due), "fix_moved_mw": plan.moved_mw,
                       "rounds": 0, "points": 0}
        try:
            package = self._package(due)
        except PointNotConverged as exc:  # recorded; the frame is not cleared
            v = self.session.failed(str(exc))
            self.report.update(dso_time_s=_time.perf_counter() - t0)
            self._verdict(frame, v)
            return
        if due:
            self.schedule.done(frame, fix)
        self.report["dso_time_s"] = _time.perf_counter() - t0
        self._out["to_tso"] = self._publish(self.session.open(package), frame, 0)

    def _package(self, due: bool):
        """Round-0 package: all operating points when due, otherwise the earlier points with
        the zero point (this frame's base case) recomputed; failed points are left out."""
        from flexcore.dso import PointNotConverged

        if due:
            rep = self.lin.linearize(tuple(self.cfg["operating_points"]),
                                     screen_rows=self.cfg["screening"])
            self._points = rep.points
            return rep.package
        points = [p for p in self._points if p.activation_fraction != 0.0]
        try:
            points.insert(0, self.lin.point(np.zeros(len(self.ids)), label="a=0",
                                            activation_fraction=0.0))
        except PointNotConverged:
            self.report["message"] = "zero point did not converge: earlier points used"
            points = list(self._points)
        return self.lin.package(points, screen_rows=self.cfg["screening"])[0]

    def _on_clearing(self, frame: int, msg: ClearingMessage) -> None:
        from flexcore.dso import Verdict

        t0 = _time.perf_counter()
        self.report.update(rounds=msg.round, points=self.session.package.m)
        step = self.session.on_clearing(msg.clearing)
        v = self.session.records[-1].validation
        if v is not None:
            self.report.update(dso_vm_mae_pu=v.vm_mae_pu,
                               dso_loading_mae_percent=v.loading_mae_percent,
                               dso_violations=len(v.violations), ac_converged=v.converged)
        if isinstance(step, Verdict):
            if msg.clearing.ok:  # the DSO's own predictions (format 2 clearings carry none)
                pv, pl = self.lin.predict(self.session.package, msg.clearing)
                self.report.update(predicted_vm_pu=pv, predicted_loading_percent=pl)
            if v is not None and v.max_violation:
                self.report["worst_violation"] = v.max_violation
            direction = float(np.sign(msg.clearing.request_mw))
            if direction:
                self.report["all_active"] = self._all_active(direction)
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

    def _all_active(self, direction: float) -> dict:
        """AC state with every bid in the request's direction (sign) at its full volume,
        keyed like GridSim's outputs."""
        from flexcore.dso import PointNotConverged

        vol = self.lin.bids.volume_mw
        try:
            vm, lp = self.lin.power_flow(np.where(np.sign(vol) == direction, vol, 0.0))
        except PointNotConverged:
            return {"converged": False}
        km = self.lin.keymap
        return {"converged": True,
                "Vm[pu]": {str(b): float(v) for b, v in zip(km.vm_pu.values(), vm)},
                "loading[%]": {f"{e}:{i}": float(x)
                               for (e, i), x in zip(km.loading_percent.values(), lp)}}


def main() -> None:
    mosaik_api_v3.start_simulation(DSOAgent())


if __name__ == "__main__":
    main()
