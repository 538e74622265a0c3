"""TSOAgent: clears the balancing request against the DSO's sensitivity package.

Privacy boundary: this module imports no pandapower and nothing from flexcore.grid.grids /
gridgen / dso / sensitivity / ppinternals (a test checks ``sys.modules``). It sees only
sensitivity packages (a folder in flexcore.exchange.package format, or in one process the
SensitivityPackage object) and bids without buses (plain dicts). Bidders are pseudonymous:
a bid is a per-run pseudonym with a volume, a price, a minimum and an indivisibility flag,
no unit, building or bus (simulators.fpu_sim issues them; README "What the TSO may know
about bidders").

Per frame (see agents.dso_agent for the whole sequence): with the frame's offers it
announces the frame's request to the DSO (``RequestMessage``), before the DSO publishes
anything; on a ``PackageMessage``
(flexcore.exchange.messages) it takes the package, maps the offers onto its columns (a bid
absent this frame has volume 0), clears with ``flexcore.market.clear`` (backend "direct")
and sends the ``ClearingResult`` to the DSO in a ``ClearingMessage``. On the
``VerdictMessage`` it outputs the set-points per bid pseudonym (the non-zero activations;
none unless the DSO allows dispatch) and the frame's clearing record. A verdict with
``published=False`` ends a frame in which the DSO published nothing (no request, base case
inside the limits): nothing was cleared, nothing is activated, the record is that of the
zero activation (cost 0).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from flexcore.district.clock import FrameClock
from simulators import FrameSimulator, meta_from_table

ATTRS_IN = (("offers", "bids of the frame (no buses)"), ("from_dso", "package or verdict"))
ATTRS_OUT = (
    ("to_dso", "clearing message"),
    ("setpoint[MW]", "bid pseudonym -> activation (MW deviation)"),
    ("clearing", "frame record: status, request, delivered, cost, predictions"),
)
META = meta_from_table({"TSO": {
    "public": True,
    "params": ["request_mw", "clock", "objective", "mip_rel_gap"],
    "attrs": [a for a, _ in ATTRS_IN + ATTRS_OUT],
}}, sim_type="event-based")  # event-based: every input triggers, outputs non-persistent


class TSOAgent(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.request = None
        self._by_round: dict = {}  # clearing per round of the current frame

    def create(self, num, model, *, request_mw: list[float], clock: dict,
               objective: str = "abs_cost", mip_rel_gap: float = 1e-6):
        if num != 1 or self.request is not None:
            raise ValueError("TSOAgent holds exactly one TSO entity")
        self.request = [float(x) for x in request_mw]
        self.clock = FrameClock.of(clock)
        self.objective, self.gap = objective, float(mip_rel_gap)
        return [{"eid": "TSO", "type": model}]

    def _frame_of(self, time: int) -> int:
        return self.clock.index_at(time)

    def step(self, time, inputs, max_advance):
        from flexcore.exchange.messages import (
            PackageMessage,
            RequestMessage,
            VerdictMessage,
            from_wire,
        )

        data = inputs.get("TSO", {})
        self._out = {}
        frame = self._frame_of(time)
        for offers in data.get("offers", {}).values():
            self._offers = {o["bid_id"]: o for o in offers}
            self._offer_table = None  # built at the frame's first clearing (most have none)
            self._times = [0.0, 0.0]
            self._last = None
            self._by_round: dict = {}
            self._regions = None  # the frame's RegionCache (made at its first clearing)
            # the request first: the DSO publishes for it (or nothing, without a request)
            self._out["to_dso"] = RequestMessage(frame, self.request[frame]).to_wire()
        for wire in data.get("from_dso", {}).values():
            msg = from_wire(wire)
            if isinstance(msg, PackageMessage):
                self._clear(frame, msg)
            elif isinstance(msg, VerdictMessage):
                self._dispatch(frame, msg)
            else:
                raise ValueError(f"TSOAgent expects package or verdict messages, got "
                                 f"{type(msg).__name__}")
        return None

    def _clear(self, frame: int, msg) -> None:
        from flexcore.exchange.bids import BidTable
        from flexcore.exchange.messages import ClearingMessage
        from flexcore.market import clear

        package = msg.load()
        cols = package.columns
        if self._offer_table is None:
            self._offer_table = _offer_table(self._offers)
        pos, table = self._offer_table
        # a column without an offer this frame: the table's last entry (volume 0)
        idx = np.fromiter(map(pos.get, cols, itertools.repeat(-1, len(cols))), np.int64,
                          len(cols))
        bids = BidTable(ids=cols, **{k: v[idx] for k, v in table.items()})
        if self._regions is None:
            from flexcore.market.direct import RegionCache

            self._regions = RegionCache()
        # a re-published package of the same round (rows added to one point) repeats the
        # other points' regions: their solves are reused (the same results)
        r = clear(package, bids, self.request[frame], backend="direct", objective=self.objective,
                  mip_rel_gap=self.gap, region_cache=self._regions)
        self._times[0] += r.build_time_s
        self._times[1] += r.solve_time_s
        self._last = self._by_round[msg.round] = r
        self._out["to_dso"] = ClearingMessage(frame, msg.round, r).to_wire()

    def _dispatch(self, frame: int, verdict) -> None:
        # the DSO may dispatch an earlier round (the cheapest AC-safe one): the verdict says which
        if not verdict.published:
            self._unpublished(frame, verdict)
            return
        r = self._by_round.get(verdict.round, self._last)
        dispatch = verdict.dispatch and r is not None and r.status == "optimal"
        setpoints: dict[str, float] = {}
        if dispatch:
            setpoints = {b: x for b, x in r.activation_mw.items()
                         if x != 0.0 and b in self._offers}
        self._out["setpoint[MW]"] = setpoints
        diag = r.diagnosis.message if (r is not None and r.diagnosis) else (r.message if r else "")
        self._out["clearing"] = {
            "frame": frame, "status": str(verdict.verdict), "dispatched": dispatch,
            "request_mw": self.request[frame],
            "delivered_mw": float(r.delivered_mw) if dispatch else 0.0,
            "cost_eur_per_h": float(r.cost_eur_per_h) if dispatch else 0.0,
            "cleared_cost_eur_per_h": float(r.cost_eur_per_h)
            if r is not None and r.cost_eur_per_h is not None else math.nan,
            "operating_point": (r.operating_point_label or "") if r is not None else "",
            "build_time_s": self._times[0], "solve_time_s": self._times[1],
            "rounds": verdict.round, "message": diag,
            "activation_mw": {b: x for b, x in r.activation_mw.items() if x != 0.0}
            if dispatch else {},
            "predicted_vm_pu": r.predicted_vm_pu if dispatch else {},
            "predicted_loading_percent": r.predicted_loading_percent if dispatch else {},
        }


    def _unpublished(self, frame: int, verdict) -> None:
        """The record of a frame without a package: the zero activation, nothing cleared."""
        self._out["setpoint[MW]"] = {}
        self._out["clearing"] = {
            "frame": frame, "status": str(verdict.verdict), "dispatched": verdict.dispatch,
            "request_mw": self.request[frame], "delivered_mw": 0.0, "cost_eur_per_h": 0.0,
            "cleared_cost_eur_per_h": 0.0, "operating_point": "",
            "build_time_s": self._times[0], "solve_time_s": self._times[1],
            "rounds": verdict.round,
            "message": verdict.message or "no request: nothing published, nothing activated",
            "activation_mw": {}, "predicted_vm_pu": {}, "predicted_loading_percent": {},
        }


def _offer_table(offers: dict) -> tuple[dict, dict]:
    """The frame's offers as ``({bid id: position}, {BidTable field: array})``; each array
    has one entry more than there are offers, at position -1: a bid not offered (volume,
    price and minimum 0, divisible)."""
    pos = {b: k for k, b in enumerate(offers)}
    rows = list(offers.values())
    table = {name: np.array([o.get(name, 0.0) for o in rows] + [0.0], dtype=float)
             for name in ("volume_mw", "price_eur_per_mwh", "min_mw")}
    table["indivisible"] = np.array([bool(o.get("indivisible", False)) for o in rows]
                                    + [False], dtype=bool)
    return pos, table


def main() -> None:
    from simulators import start_simulation

    start_simulation(TSOAgent())


if __name__ == "__main__":
    main()
