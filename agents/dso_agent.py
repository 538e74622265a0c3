"""DSOAgent: the DSO's side of every frame. Holds the only grid model among the agents.

Message sequence inside one frame (mosaik time t; tiers t:0, t:1, ... of the same-time loop
formed by ``FPUSim -> DSOAgent -> TSOAgent -(weak)-> DSOAgent`` and ``TSOAgent -(weak)->
FPUSim`` inside one ``world.group()``)::

    t:0  BuildingSim, FPUSim --(load/PV, dP_base, offers)--> DSO
         DSO: set fixed injections (forecast = actual profile + unit baselines);
              re-linearise at every operating point if due (every `relinearize_every`
              frames, or sum|dP_fix| moved more than `relinearize_threshold_mw` since the
              last time, or a new day); otherwise recompute only the zero point (this
              frame's base case, so that a zero request is exact) and reuse the others;
              publish the package (round 0). A frame whose points all fail to
              converge gets the verdict ``dso_failed`` at once and the run goes on.
         DSO --{kind: package, round 0, package|path}--> TSO ;  TSO clears --{clearing}--> DSO
    t:k  DSO: AC check of the clearing (Linearizer.validate). Accurate (voltage and loading
              MAE below tolerance) and safe, or k == refine_rounds: final verdict
              {kind: verdict, status optimal|unsafe|<clearing status>, dispatch}.
              Otherwise: refine (cleared activation as a new operating point),
              publish {kind: package, round k+1} and the TSO clears again.
    t:k' TSO --(set-points, zero unless dispatch)--> FPUSim --(dP)--> GridSim

At the final verdict of a frame with a request the DSO also reports
the AC state with every bid in the request's direction fully active (``report
["all_active"]``, the source's Figure 5), so that the run folder shows what the clearing
avoided. The request comes with the TSO's clearing message; it is the TSO's to share.

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

from flexcore.dso.linearizer import PointNotConverged
from flexcore.grid.district_grid import district_net
from flexcore.district.clock import FrameClock
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
        from flexcore.exchange.bids import BidTable
        from flexcore.dso.linearizer import Linearizer
        from flexcore.exchange.limits import Limits

        net, ids, load_idx, sgen_idx = district_net(grid)
        self._pos = {b: k for k, b in enumerate(ids)}
        bus_of_building = dict(zip(ids, net.load.loc[load_idx, "bus"].to_numpy().tolist()))
        self.ids = tuple(c["bid_id"] for c in catalog)
        self._bus = np.array([bus_of_building[c["building_id"]] for c in catalog], np.int64)
        self._col = {b: k for k, b in enumerate(self.ids)}
        self.cfg = dso
        bids = BidTable(ids=self.ids, volume_mw=np.zeros(len(self.ids)),
                        price_eur_per_mwh=np.zeros(len(self.ids)), bus=self._bus)
        # deterministic salt (same seed -> same keys); the key map stays with the DSO
        self.lin = Linearizer(net, bids, salt=f"bergwald-{seed}", limits=Limits.from_dict(dso["limits"]))
        self._sgen_pos = net.sgen.index.get_indexer(sgen_idx)
        self._n_sgen = len(net.sgen)
        # building loads by position in the load table; other loads keep their values, as in
        # GridSim (a SimBench grid may hold loads that are no building, or out of service)
        self._load_pos = net.load.index.get_indexer(load_idx)
        self._load_p0 = net.load["p_mw"].to_numpy(float).copy()
        self._load_q0 = net.load["q_mvar"].to_numpy(float).copy()
        self.dir = Path(run_dir)
        (self.dir / "dso").mkdir(parents=True, exist_ok=True)
        self.lin.keymap.save(self.dir / "dso" / "KEYMAP.json")  # private: for the validator
        self.clock = FrameClock.of(clock)
        if exchange not in ("files", "memory"):
            raise ValueError(f"exchange must be 'files' or 'memory', got {exchange!r}")
        self.exchange = exchange
        self._last_fix = None
        self._last_lin_frame = -10**9
        self._points: tuple = ()
        return [{"eid": "DSO", "type": model}]

    # --------------------------------------------------------------- helpers
    def _vector(self, values: dict) -> np.ndarray:
        out = np.zeros(len(self._pos))
        for b, v in values.items():
            out[self._pos[b]] = v
        return out

    def _publish(self, package, frame: int, round_: int) -> dict:
        """The package message: the object itself (in-process runs) or a folder path."""
        msg = {"kind": "package", "frame": frame, "round": round_}
        if self.exchange == "memory":
            return msg | {"package": package}
        from flexcore.exchange.package import save_package

        path = self.dir / "exchange" / f"r{round_}"
        save_package(package, path)
        return msg | {"path": str(path)}

    # ----------------------------------------------------------------- step
    def step(self, time, inputs, max_advance):
        data = inputs.get("DSO", {})
        frame = self.clock.index_at(time)
        self._out = {}
        if "offers" in data:
            self._new_frame(frame, data)
        msg = _merge(data, "from_tso")
        if msg:
            self._on_clearing(frame, msg)
        return None

    def _new_frame(self, frame: int, data: dict) -> None:
        t0 = _time.perf_counter()
        load_p, load_q = self._load_p0.copy(), self._load_q0.copy()
        load_p[self._load_pos] = building_p = self._vector(_merge(data, "P_load[MW]"))
        load_q[self._load_pos] = self._vector(_merge(data, "Q_load[MVAr]"))
        sgen_b = self._vector(_merge(data, "P_pv[MW]")) + self._vector(_merge(data, "dP_base[MW]"))
        sgen = np.zeros(self._n_sgen)
        sgen[self._sgen_pos] = sgen_b
        self.lin.set_base(load_p_mw=load_p, load_q_mvar=load_q, sgen_p_mw=sgen)
        vol = np.zeros(len(self.ids))
        price = np.zeros(len(self.ids))
        for offers in data["offers"].values():
            for o in offers:
                k = self._col[o["bid_id"]]
                vol[k], price[k] = o["volume_mw"], o["price_eur_per_mwh"]
        self.lin.set_bid_volumes(vol, price)
        fix = sgen_b - building_p
        moved = np.inf if self._last_fix is None else float(np.abs(fix - self._last_fix).sum())
        new_day = self.clock.new_day(frame)
        due = (frame - self._last_lin_frame >= self.cfg["relinearize_every"] or new_day
               or moved > self.cfg["relinearize_threshold_mw"] or not self._points)
        self.report = {"frame": frame, "relinearized": bool(due), "fix_moved_mw": moved,
                       "rounds": 0, "points": 0}
        try:
            self.pkg = self._package(due)
        except PointNotConverged as exc:  # recorded; the frame is not cleared
            self.pkg = None
            self.report.update(status="dso_failed", safe=False, dispatched=False,
                               message=str(exc), dso_time_s=_time.perf_counter() - t0)
            self._out["to_tso"] = {"kind": "verdict", "frame": frame, "round": 0,
                                   "dispatch": False, "status": "dso_failed", "safe": False}
            self._out["report"] = self.report
            return
        if due:
            self._last_fix, self._last_lin_frame = fix, frame
        self.report["dso_time_s"] = _time.perf_counter() - t0
        self._out["to_tso"] = self._publish(self.pkg, frame, 0)

    def _package(self, due: bool):
        """Round-0 package: all operating points when due, otherwise the earlier points with
        the zero point (this frame's base case) recomputed; failed points are left out."""
        if due:
            rep = self.lin.linearize(tuple(self.cfg["operating_points"]),
                                     screen_rows=self.cfg["screening"])
            self._points = rep.points
            return rep.package
        points = [p for p in self._points if p.activation_fraction != 0.0]
        try:
            zero = self.lin.point(np.zeros(len(self.ids)), label="a=0", activation_fraction=0.0)
            points.insert(0, zero)
        except PointNotConverged:
            self.report["message"] = "zero point did not converge: earlier points used"
            points = list(self._points)
        return self.lin.package(points, screen_rows=self.cfg["screening"])[0]

    def _on_clearing(self, frame: int, msg: dict) -> None:
        t0 = _time.perf_counter()
        k = int(msg["round"])
        rep = self.report
        rep["rounds"] = k
        rep["points"] = self.pkg.m
        verdict = {"kind": "verdict", "frame": frame, "round": k, "dispatch": False,
                   "status": msg["status"], "safe": False}
        if msg["status"] == "optimal":
            act = np.array([msg["activation_mw"].get(b, 0.0) for b in self.ids])
            v = self.lin.validate(act, predicted_vm_pu=msg["predicted_vm_pu"],
                                  predicted_loading_percent=msg["predicted_loading_percent"])
            rep.update(dso_vm_mae_pu=v.vm_mae_pu, dso_loading_mae_percent=v.loading_mae_percent,
                       dso_violations=len(v.violations), ac_converged=v.converged)
            accurate = (v.converged and v.vm_mae_pu <= self.cfg["tol_vm_mae_pu"]
                        and v.loading_mae_percent <= self.cfg["tol_loading_mae_percent"])
            final = (accurate and v.safe) or k >= self.cfg["refine_rounds"]
            if not final:
                try:
                    self.pkg = self.lin.refine(self.pkg, act, label=f"refine {k + 1}")
                except PointNotConverged:
                    final = True
            if final:
                verdict["safe"] = v.safe
                verdict["status"] = "optimal" if v.safe else "unsafe"
                verdict["dispatch"] = v.safe or self.cfg["dispatch_unsafe"]
                if v.max_violation:
                    rep["worst_violation"] = v.max_violation
            else:
                self._out["to_tso"] = self._publish(self.pkg, frame, k + 1)
        if "to_tso" not in self._out:
            self._out["to_tso"] = verdict
            rep.update(status=verdict["status"], safe=verdict["safe"],
                       dispatched=verdict["dispatch"])
            direction = float(np.sign(msg.get("request_mw", 0.0)))
            if direction:
                rep["all_active"] = self._all_active(direction)
            self._out["report"] = rep
        rep["dso_time_s"] += _time.perf_counter() - t0

    def _all_active(self, direction: float) -> dict:
        """AC state with every bid in the request's direction (sign) at its full volume,
        keyed like GridSim's outputs."""
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
