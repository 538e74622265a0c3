"""The DSO's work in one co-simulation frame, without mosaik (agents/dso_agent.py is glue).

- :func:`catalog_bids`: the bid catalog (bid pseudonym -> building) as a BidTable with buses;
- :func:`offer_arrays`: a frame's offers as volume and price arrays in column order;
- :func:`round0_package`: the round-0 package, all operating points or only the zero point
  recomputed;
- :func:`all_active_state`: the AC state with every bid of one direction fully active;
- :class:`PublicationAudit`: the privacy audit of the packages the DSO published in a run.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexcore.dso.linearizer import Linearizer, OperatingPoint, PointNotConverged
from flexcore.exchange.bids import BidError, BidTable


def catalog_bids(catalog: Sequence[Mapping[str, Any]], bus_of_building: Mapping[str, int]
                 ) -> BidTable:
    """The catalog ``[{bid_id, building_id}, ...]`` as a BidTable (volumes and prices 0,
    each bid at its building's bus), in catalog order."""
    unknown = [c["building_id"] for c in catalog if c["building_id"] not in bus_of_building]
    if unknown:
        raise BidError(f"bid catalog: unknown building id(s) {unknown[:5]}")
    n = len(catalog)
    return BidTable(ids=tuple(c["bid_id"] for c in catalog), volume_mw=np.zeros(n),
                    price_eur_per_mwh=np.zeros(n),
                    bus=np.array([bus_of_building[c["building_id"]] for c in catalog],
                                 np.int64))


def offer_arrays(columns: Sequence[str], offers: Iterable[Mapping[str, Any]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(volume_mw, price_eur_per_mwh) in column order; a bid not offered has volume 0."""
    col = {b: k for k, b in enumerate(columns)}
    vol, price = np.zeros(len(columns)), np.zeros(len(columns))
    for o in offers:
        if o["bid_id"] not in col:
            raise BidError(f"offer for bid {o['bid_id']!r}, which is not in the catalog")
        k = col[o["bid_id"]]
        vol[k], price[k] = o["volume_mw"], o["price_eur_per_mwh"]
    return vol, price


@dataclass(frozen=True)
class Round0:
    """The round-0 package of a frame, the operating points it was built from (kept for the
    next frames when ``due``) and a note for the frame report."""

    package: Any
    points: tuple[OperatingPoint, ...]
    message: str = ""


def round0_package(lin: Linearizer, points: Sequence[OperatingPoint], *, due: bool,
                   operating_points: Sequence[float], screening: bool) -> Round0:
    """All operating points when ``due``; otherwise the earlier ``points`` with the zero
    point (this frame's base case) recomputed, so that a zero request is exact. A zero
    point that does not converge leaves the earlier points in use. Raises
    :class:`PointNotConverged` when every point of a due linearisation fails."""
    if due:
        rep = lin.linearize(tuple(operating_points), screen_rows=screening)
        return Round0(rep.package, tuple(rep.points))
    kept = [p for p in points if p.activation_fraction != 0.0]
    message = ""
    try:
        kept.insert(0, lin.point(np.zeros(len(lin.bids.ids)), label="a=0",
                                 activation_fraction=0.0))
    except PointNotConverged:
        message = "zero point did not converge: earlier points used"
        kept = list(points)
    return Round0(lin.package(kept, screen_rows=screening)[0], tuple(points), message)


def all_active_state(lin: Linearizer, direction: float) -> dict[str, Any]:
    """AC state with every bid in the request's direction (sign) at its full volume, keyed
    like GridSim's outputs (``Vm[pu]`` by bus, ``loading[%]`` by ``element:index``)."""
    vol = lin.bids.volume_mw
    try:
        vm, lp = lin.power_flow(np.where(np.sign(vol) == direction, vol, 0.0))
    except PointNotConverged:
        return {"converged": False}
    km = lin.keymap
    return {"converged": True,
            "Vm[pu]": {str(b): float(v) for b, v in zip(km.vm_pu.values(), vm)},
            "loading[%]": {f"{e}:{i}": float(x)
                           for (e, i), x in zip(km.loading_percent.values(), lp)}}


class PublicationAudit:
    """The privacy audit (:func:`flexcore.dso.audit.audit`) of packages the DSO published in
    a run: the first round-0 package of each day type (audited when published) and the
    round-0 package of the frame with the largest |request| (audited at :meth:`result`,
    against a copy of the grid in that frame's state). A Bergwald package takes ~2-3 s.
    """

    def __init__(self, lin: Linearizer, *, order_permutations: int = 100) -> None:
        self.lin = lin
        self.order_permutations = int(order_permutations)
        self.audits: dict[str, dict[str, Any]] = {}
        self._day_types: set[str] = set()
        self._last: tuple[int, Any] | None = None
        self._largest: tuple[int, float, Any, Any] | None = None
        self.time_s = 0.0

    def published(self, frame: int, day_type: str, package: Any) -> None:
        """A round-0 package was published in ``frame``."""
        self._last = (frame, package)
        if day_type not in self._day_types:
            self._day_types.add(day_type)
            self.audits[f"first_{day_type}"] = self._audit(frame, package, self.lin.net)

    def cleared(self, frame: int, request_mw: float) -> None:
        """The TSO cleared ``frame`` for ``request_mw`` (call at round 0)."""
        if self._last is None or self._last[0] != frame or not request_mw:
            return
        if self._largest is None or abs(request_mw) > abs(self._largest[1]):
            self._largest = (frame, float(request_mw), self._last[1], copy.deepcopy(self.lin.net))

    def result(self) -> dict[str, Any]:
        """``{audits: {name: record}, audit_time_s}``; each record holds the frame, the
        package shape, the scores, and the co-location figures (groups of identical
        columns)."""
        if self._largest is not None and "largest_request" not in self.audits:
            frame, req, package, net = self._largest
            self.audits["largest_request"] = self._audit(frame, package, net) | {
                "request_mw": req}
        return {"audits": self.audits, "audit_time_s": self.time_s}

    def _audit(self, frame: int, package: Any, net: Any) -> dict[str, Any]:
        from flexcore.dso.audit import attack_colocated, audit, rows_only

        t0 = time.perf_counter()
        report = audit(package, net=net, keymap=self.lin.keymap,
                       order_permutations=self.order_permutations)
        m = len(package.rows_a) if rows_only(package) else package.m
        groups: list[list[int]] = []
        for i in range(m):
            groups += attack_colocated(package, point=i)
        sizes = sorted({len(g) for g in groups}, reverse=True)
        dt = time.perf_counter() - t0
        self.time_s += dt
        return {"frame": frame, **report.as_dict(), "audit_time_s": dt,
                "colocation": {"groups": len({tuple(g) for g in groups}),
                               "bids_in_groups": len({j for g in groups for j in g}),
                               "largest_group": sizes[0] if sizes else 0}}
