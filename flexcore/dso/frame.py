"""The DSO's work in one co-simulation frame, without mosaik (agents/dso_agent.py is glue).

- :func:`catalog_bids`: the bid catalog (bid pseudonym -> building) as a BidTable with buses;
- :func:`offer_arrays`: a frame's offers as volume and price arrays in column order;
- :func:`round0_package`: the round-0 package, all operating points or only the zero point
  recomputed;
- :func:`all_active_state`: the AC state with every bid of one direction fully active;
- :class:`PublicationAudit`: the privacy audit of the packages the DSO published in a run;
- :class:`DsoFrames`: all of it for every frame of a run (open a frame, answer a clearing).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexcore.dso.linearizer import Linearizer, OperatingPoint, PointNotConverged
from flexcore.dso.privacy import RequestRows, ScreeningCache, harden
from flexcore.dso.refinement import (
    RefinementPolicy,
    RefinementSession,
    RelinearizationSchedule,
    Verdict,
)
from flexcore.dso.safety import solver_margin_limits
from flexcore.exchange.bids import BidError, BidTable
from flexcore.exchange.clearing import ClearingResult
from flexcore.exchange.enums import ClearingStatus, FrameVerdict, PrivacyLevel
from flexcore.exchange.limits import Limits

#: sides added per clearing that violates unpublished ones (the most violated first): one
#: keeps the package smallest; nearly parallel sides are often cut by the same clearing
CUT_SIDES = 1


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
    offers = list(offers)
    pos = [col.get(o["bid_id"], -1) for o in offers]
    if -1 in pos:
        bad = offers[pos.index(-1)]["bid_id"]
        raise BidError(f"offer for bid {bad!r}, which is not in the catalog")
    if len(set(pos)) != len(pos):  # a bid offered twice: the last offer holds, as before
        last = {k: o for k, o in zip(pos, offers)}
        pos, offers = list(last), list(last.values())
    vol[pos] = [o["volume_mw"] for o in offers]
    price[pos] = [o["price_eur_per_mwh"] for o in offers]
    return vol, price


@dataclass(frozen=True)
class Round0:
    """The round-0 package of a frame, the operating points it was built from (kept for the
    next frames when ``due``) and a note for the frame report."""

    package: Any
    points: tuple[OperatingPoint, ...]
    message: str = ""


def round0_package(lin: Linearizer, points: Sequence[OperatingPoint], *, due: bool,
                   operating_points: Sequence[float], screening: bool,
                   spare_points: int = 0) -> Round0:
    """All operating points when ``due``; otherwise the earlier ``points`` with the zero
    point (this frame's base case) recomputed, so that a zero request is exact. A zero
    point that does not converge leaves the earlier points in use. Raises
    :class:`PointNotConverged` when every point of a due linearisation fails.
    ``spare_points``: room for the refinement points of the frame (no copies then)."""
    if due:
        rep = lin.linearize(tuple(operating_points), screen_rows=screening,
                            spare_points=spare_points)
        return Round0(rep.package, tuple(rep.points))
    kept = [p for p in points if p.activation_fraction != 0.0]
    message = ""
    try:
        kept.insert(0, lin.point(np.zeros(len(lin.bids.ids)), label="a=0",
                                 activation_fraction=0.0))
    except PointNotConverged:
        message = "zero point did not converge: earlier points used"
        kept = list(points)
    return Round0(lin.package(kept, screen_rows=screening, spare_points=spare_points)[0],
                  tuple(points), message)


def inside_limits(limits: Limits, vm_pu: np.ndarray, loading_percent: np.ndarray) -> bool:
    """Every voltage and (signed) loading within ``limits``."""
    return bool(np.all(vm_pu >= limits.vm_min_pu) and np.all(vm_pu <= limits.vm_max_pu)
                and np.all(loading_percent >= limits.loading_min_percent)
                and np.all(loading_percent <= limits.loading_max_percent))


def base_case_point(package: Any) -> int | None:
    """The last point of ``package`` at activation 0 with every row inside the package's
    limits, or None (a base-case congestion). Used on the published (margined) round-0
    package before :class:`DsoFrames` decided without a package (tests: the oracle of
    :meth:`DsoFrames.open_frame`'s base-case check)."""
    for i in range(package.m - 1, -1, -1):
        if np.any(package.p_flex_mw[i] != 0.0):
            continue
        if inside_limits(package.limits, package.vm_pu[i], package.loading_percent[i]):
            return i
    return None


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
    against a copy of the grid in that frame's state); ``mode`` (scenario ``[dso] audit``):
    ``"sample"`` both, ``"largest"`` only the latter (one audit per run), ``"off"`` none.
    Measured: ~2.5 s for a Bergwald package with one bid per building (241 columns), ~4-6 s
    for the co-simulation's (1068 columns, 3 points; 1.5 s of it once per process for the
    rating catalogue).
    """

    def __init__(self, lin: Linearizer, *, order_permutations: int = 100,
                 mode: str = "sample") -> None:
        if mode not in ("sample", "largest", "off"):
            raise ValueError(f"audit mode: expected sample, largest or off, got {mode!r}")
        self.lin, self.mode = lin, mode
        self.order_permutations = int(order_permutations)
        self.audits: dict[str, dict[str, Any]] = {}
        self._day_types: set[str] = set()
        self._last: tuple[int, Any] | None = None
        self._largest: tuple[int, float, Any, Any] | None = None
        self.time_s = 0.0

    def published(self, frame: int, day_type: str, package: Any) -> None:
        """``package`` is the final round-0 package of ``frame`` (the one the TSO's round-0
        clearing was accepted on)."""
        self._last = (frame, package)
        if self.mode == "sample" and day_type not in self._day_types:
            self._day_types.add(day_type)
            # the audit reads the grid's tables (topology, loads), no power-flow results
            self.audits[f"first_{day_type}"] = self._audit(frame, package,
                                                           self.lin.net_tables())

    def cleared(self, frame: int, request_mw: float) -> None:
        """The TSO cleared ``frame`` for ``request_mw`` (call at round 0)."""
        if (self.mode == "off" or self._last is None or self._last[0] != frame
                or not request_mw):
            return
        if self._largest is None or abs(request_mw) > abs(self._largest[1]):
            self._largest = (frame, float(request_mw), self._last[1],
                             copy.deepcopy(self.lin.net_tables()))

    def result(self) -> dict[str, Any]:
        """``{audits: {name: record}, audit_time_s}``; each record holds the frame, the
        package shape, the scores, and the co-location figures (groups of identical
        columns)."""
        if self._largest is not None and "largest_request" not in self.audits:
            frame, req, package, net = self._largest
            self.audits["largest_request"] = self._audit(frame, package, net) | {
                "request_mw": req}
        return {"mode": self.mode, "audits": self.audits, "audit_time_s": self.time_s}

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


@dataclass(frozen=True)
class FrameStep:
    """What the DSO sends next in a frame: a package for round ``round`` or, at the end of
    the frame, the verdict with the frame report."""

    round: int
    package: Any = None
    verdict: Verdict | None = None
    report: dict[str, Any] | None = None
    #: False: the frame ends without any package (no request, base case inside the limits)
    published: bool = True


class DsoFrames:
    """The DSO's side of every co-simulation frame (agents/dso_agent.py sends the messages).

    ``open_frame``: fixed injections from the building inputs (forecast = actual profile +
    unit baselines), bid volumes from the offers, and only the AC power flow at activation
    0, checked against the limits a published package would carry (the nominal ones with
    the solver margin). No package is built yet: most frames publish none.
    ``on_request``: the TSO's request of the frame, announced before anything is published.
    Without a request and with the base case inside those limits the frame ends here:
    nothing is published or linearised, the AC state at x = 0 (already computed) is the
    DSO's check, and the verdict goes to the TSO with ``published=False``. This is the
    decision the round-0 package's fresh zero point gave (its values are this AC power flow;
    rows screened out of a package cannot reach their limits anywhere in the box, x = 0
    included, so checking every row decides the same). Otherwise the round-0 package is
    built now (all points when the :class:`RelinearizationSchedule` says so at this frame,
    else the earlier points with the zero point recomputed; :meth:`RelinearizationSchedule.
    done` only after a full linearisation; a new day stays pending until one), a frame
    whose points all fail to converge gets the verdict ``dso_failed``, and the package is
    published: format 1
    (``[dso] privacy = "full"``), an envelope, or format 2 (``"exact"``) with the rows of
    this request (:class:`~flexcore.dso.privacy.RequestRows`, ``[dso] exact_rows =
    "request"``, the default) or the LP-screened rows of every request (``"screened"``).
    With request rows a base-case congestion is resolved as before: its rows are published
    from the start and the TSO's counter-trade (request 0) clears against them.
    ``on_clearing``: with request rows, a clearing that violates a row not yet published
    gets the same round again with those rows added; otherwise the
    :class:`RefinementSession` round policy; at the final verdict of a frame with a request
    the report also holds the AC state with every bid in the request's direction fully
    active (``report["all_active"]``). Safety: a clearing violating an AC limit after the
    last round gets status ``unsafe`` and is not dispatched unless ``dispatch_unsafe`` is set
    (then it is dispatched and flagged). ``cfg`` is the scenario's ``[dso]`` table.
    """

    def __init__(self, lin: Linearizer, inj: Any, cfg: Mapping[str, Any], clock: Any) -> None:
        self.lin, self.inj, self.cfg, self.clock = lin, inj, cfg, clock
        self.session = RefinementSession(lin, policy=RefinementPolicy(
            max_rounds=cfg["refine_rounds"], tol_vm_mae_pu=cfg["tol_vm_mae_pu"],
            tol_loading_mae_percent=cfg["tol_loading_mae_percent"],
            dispatch_unsafe=cfg["dispatch_unsafe"]))
        self.schedule = RelinearizationSchedule(cfg["relinearize_every"],
                                                cfg["relinearize_threshold_mw"])
        self.audit = PublicationAudit(lin, mode=cfg.get("audit", "sample"))
        self.privacy = PrivacyLevel(cfg.get("privacy", PrivacyLevel.EXACT))
        self.exact_rows = cfg.get("exact_rows", "request")
        if self.exact_rows not in ("request", "screened"):
            raise ValueError(f"exact_rows: expected request or screened, got "
                             f"{self.exact_rows!r}")
        # exact screening reuses what it proved in earlier publications of this run
        # (witnesses, dual certificates; re-checked every time: docs/method.md)
        self.screening_cache = ScreeningCache()
        self.points: tuple[OperatingPoint, ...] = ()
        self.report: dict[str, Any] = {}
        self.frame: int | None = None     # the open frame (None: closed)
        self.request_mw: float | None = None
        self._rows: RequestRows | None = None
        self._published: Any = None
        self._fix_mw: np.ndarray = np.zeros(0)
        self._new_day = False        # a new day began since the last full linearisation
        #: the AC state (vm, loading) at activation 0 of the open frame when inside the
        #: margined limits, else None (not converged, or a base-case congestion)
        self._zero_state: tuple[np.ndarray, np.ndarray] | None = None
        #: per published package: (frame, round, seconds to make it, rows published)
        self.publications: list[tuple[int, int, float, int]] = []
        self.frames_unpublished = 0

    def open_frame(self, frame: int, *, p_load_mw: Mapping[str, float],
                   q_load_mvar: Mapping[str, float], p_pv_mw: Mapping[str, float],
                   dp_base_mw: Mapping[str, float], offers: Iterable[Mapping[str, Any]]
                   ) -> FrameStep | None:
        """Prepare ``frame``: None (wait for the request)."""
        t0 = time.perf_counter()
        self.frame, self.request_mw, self._rows, self._published = frame, None, None, None
        inj = self.inj.apply(p_load_mw=p_load_mw, q_load_mvar=q_load_mvar, p_pv_mw=p_pv_mw,
                             dp_base_mw=dp_base_mw)
        self.lin.set_base(load_p_mw=inj.load_p_mw, load_q_mvar=inj.load_q_mvar,
                          sgen_p_mw=inj.sgen_p_mw)
        volume_mw, price = offer_arrays(self.lin.bids.ids, offers)
        self._offered_mw = volume_mw
        self.lin.set_bid_volumes(volume_mw, price)
        self._fix_mw = inj.fix_mw
        self._new_day = self._new_day or self.clock.new_day(frame)
        plan = self.schedule.decide(frame, inj.fix_mw, new_day=self._new_day)
        # relinearized: set when a package is built (on_request)
        self.report = {"frame": frame, "relinearized": False, "fix_moved_mw": plan.moved_mw,
                       "rounds": 0, "points": 0}
        islands = []
        if self.lin.undeliverable:
            offered = {b for b, x in zip(self.lin.bids.ids, self._offered_mw) if x != 0.0}
            islands = [b for b, _ in self.lin.undeliverable if b in offered]
        self._islands = (f"{len(islands)} undeliverable bid(s) on isolated buses: "
                         + ", ".join(islands[:10])) if islands else ""
        self._zero_state = None
        try:
            vm, lp = self.lin.power_flow(np.zeros(len(self.lin.bids.ids)))
        except PointNotConverged:
            pass   # decided when the package is built (on_request)
        else:
            if inside_limits(self._clearing_limits(), vm, lp):
                self._zero_state = (vm, lp)
        self.report["dso_time_s"] = time.perf_counter() - t0
        return None

    def _clearing_limits(self) -> Limits:
        """The limits of a published package (the TSO clears against them)."""
        lim = self.lin.limits
        return solver_margin_limits(lim) if self.session.policy.solver_margin else lim

    def _build_round0(self, frame: int) -> FrameStep | None:
        """The round-0 package of ``frame`` (session opened on it); the ``dso_failed``
        verdict when no point converges."""
        plan = self.schedule.decide(frame, self._fix_mw, new_day=self._new_day)
        self.report.update(relinearized=bool(plan.due), fix_moved_mw=plan.moved_mw)
        try:
            r0 = round0_package(self.lin, self.points, due=plan.due,
                                operating_points=self.cfg["operating_points"],
                                screening=self.cfg["screening"],
                                spare_points=int(self.cfg["refine_rounds"]))
        except PointNotConverged as exc:  # recorded; the frame is not cleared
            return self._final(0, self.session.failed(str(exc)))
        self.points = r0.points
        if r0.message:
            self.report["message"] = r0.message
        if plan.due:
            self.schedule.done(frame, self._fix_mw)
            self._new_day = False
        self._round0 = self.session.open(r0.package)
        return None

    def on_request(self, frame: int, request_mw: float) -> FrameStep | None:
        """The TSO announced ``request_mw`` for ``frame``: the round-0 package to publish,
        or the verdict of a frame that needs none (or whose package failed); None if
        ``frame`` is not open or its request came already."""
        if frame != self.frame or self.request_mw is not None:
            return None
        t0 = time.perf_counter()
        self.request_mw = float(request_mw)
        if self.request_mw == 0.0 and self._zero_state is not None:
            out = self._unpublished(frame, *self._zero_state)
        else:
            out = self._build_round0(frame)
            if out is None:
                self.report["published"] = True
                out = self._next(0, self._round0)
        self.report["dso_time_s"] += time.perf_counter() - t0
        return out

    def _unpublished(self, frame: int, vm: np.ndarray, lp: np.ndarray) -> FrameStep:
        """No request, base case inside the limits: nothing to publish or activate. The
        DSO's AC check of x = 0 is the power flow of ``open_frame``, its own estimate of it
        the same values (errors 0); the report carries no predictions (nothing was
        predicted: the Validator's errors are NaN)."""
        self.report["published"] = False
        self.frames_unpublished += 1
        v = self.lin.validate(np.zeros(len(self.lin.bids.ids)), predicted_vm_pu=vm,
                              predicted_loading_percent=lp)
        self.report.update(rounds=0, points=0, dso_vm_mae_pu=v.vm_mae_pu,
                           dso_loading_mae_percent=v.loading_mae_percent,
                           dso_violations=len(v.violations), ac_converged=v.converged)
        zero = ClearingResult(status=ClearingStatus.OPTIMAL, request_mw=0.0,
                              message="no request: nothing published, nothing to activate",
                              delivered_mw=0.0, cost_eur_per_h=0.0, objective=0.0,
                              method="zero")
        # the margined limits held, so the nominal ones hold (v.safe)
        return self._final(0, Verdict(FrameVerdict.OPTIMAL, safe=v.safe, dispatch=True,
                                      validation=v, rounds=0, clearing=zero),
                           published=False)

    def on_clearing(self, frame: int, round_: int, clearing: Any) -> FrameStep:
        t0 = time.perf_counter()
        if self.privacy == PrivacyLevel.ENVELOPE and clearing.ok:
            # an envelope package holds only its own point(s): the DSO's index of that point
            labels = [p.label for p in self.session.package.points]
            if clearing.operating_point_label in labels:
                clearing = dataclasses.replace(
                    clearing, operating_point=labels.index(clearing.operating_point_label))
        if self._rows is not None and clearing.ok:
            x = clearing.activation_vector(self._rows.package.columns)
            if self._rows.cut(int(clearing.operating_point), x, most=CUT_SIDES):
                out = FrameStep(round_, package=self._publish(self._rows.package))
                self.report["dso_time_s"] += time.perf_counter() - t0
                return out
        if round_ == 0:
            self.audit.published(frame, self.clock.frames[frame].day_type, self._published)
            self.audit.cleared(frame, clearing.request_mw)
        out = self._on_round(frame, round_, clearing)
        self.report["dso_time_s"] += time.perf_counter() - t0
        return out

    def _on_round(self, frame: int, round_: int, clearing: Any, *, published: bool = True
                  ) -> FrameStep:
        self.report.update(rounds=round_, points=self.session.package.m)
        step = self.session.on_clearing(clearing)
        v = self.session.records[-1].validation
        if v is not None:
            self.report.update(dso_vm_mae_pu=v.vm_mae_pu,
                               dso_loading_mae_percent=v.loading_mae_percent,
                               dso_violations=len(v.violations), ac_converged=v.converged)
        if isinstance(step, Verdict):
            if clearing.ok:  # the DSO's own predictions (format-2 clearings carry none)
                pv, pl = self.lin.predict(self.session.package, clearing)
                self.report.update(predicted_vm_pu=pv, predicted_loading_percent=pl)
            if v is not None and v.max_violation:
                self.report["worst_violation"] = v.max_violation
            direction = float(np.sign(clearing.request_mw))
            if direction:
                self.report["all_active"] = all_active_state(self.lin, direction)
            return self._final(round_, step, published=published)
        return self._next(round_ + 1, step)

    def _next(self, round_: int, package: Any) -> FrameStep:
        """Round ``round_`` published; a frame whose envelope cannot be made (a row past
        its limit with nothing activated: no box holds 0) ends as ``dso_failed``."""
        from flexcore.dso.envelope import EnvelopeError

        try:
            return FrameStep(round_, package=self._publish(package, new_round=True))
        except EnvelopeError as exc:
            return self._final(round_, self.session.failed(f"no envelope: {exc}"))

    def _publish(self, package: Any, *, new_round: bool = False) -> Any:
        """What the DSO sends for its private format-1 ``package`` (margined): itself with
        ``[dso] privacy = "full"`` (research), else its hardened form; the DSO keeps
        ``package`` for predictions, validation and refinement."""
        t0 = time.perf_counter()
        out = self.publishable(package, new_round=new_round)
        self._published = out
        rows = (sum(out.row_counts) if hasattr(out, "row_counts")
                else 2 * (len(out.vm_rows) + len(out.loading_rows)) * out.m
                if hasattr(out, "vm_rows") else 0)
        self.publications.append((int(self.frame if self.frame is not None else -1),
                                  int(self.session.round), time.perf_counter() - t0, rows))
        return out

    def publication_stats(self) -> dict[str, Any]:
        """What the DSO published in the run (``dso/audit.json`` ``publications``): packages,
        frames with and without a package, seconds and rows (sides) per package."""
        times = np.array([p[2] for p in self.publications])
        rows = np.array([p[3] for p in self.publications])
        frames = {p[0] for p in self.publications}
        return {"privacy": self.privacy.value, "exact_rows": self.exact_rows,
                "packages": len(self.publications), "frames_published": len(frames),
                "frames_unpublished": self.frames_unpublished,
                "time_s_total": float(times.sum()),
                "time_s_per_package_mean": float(times.mean()) if len(times) else 0.0,
                "time_s_per_package_max": float(times.max()) if len(times) else 0.0,
                "rows_per_package_mean": float(rows.mean()) if len(rows) else 0.0,
                "rows_per_package_max": int(rows.max()) if len(rows) else 0}

    def publishable(self, package: Any, *, new_round: bool = True) -> Any:
        """The published form of ``package`` (see :meth:`_publish`); ``new_round``: start
        the request rows afresh (a new round), else add to the current ones."""
        if self.privacy == PrivacyLevel.FULL:
            return package
        box = self.lin.bids.subset(package.columns)
        if self.privacy == PrivacyLevel.ENVELOPE:
            from flexcore.dso.envelope import envelope_with_report

            # corners checked in AC at this frame's state (the fixed injections the
            # linearizer holds), rows tightened by the AC mismatch until they hold
            env, rep = envelope_with_report(package, box, linearizer=self.lin)
            self.report.update(envelope_point=package.points[rep.points[0]].label,
                               envelope_ac_safe=rep.ac_safe, envelope_rounds=rep.rounds,
                               envelope_corners=len(rep.corners))
            return env
        if self.exact_rows == "request" and self.request_mw is not None:
            if new_round or self._rows is None:
                # a new round: the sides cut in this frame's earlier rounds start it
                seed = self._rows.cut_names if self._rows is not None else set()
                self._rows = RequestRows(package, request_mw=self.request_mw, seed=seed,
                                         previous=self._rows)
            t_before = self._rows.time_s
            hardened, key = self._rows.publish()
            self._count(self._rows.time_s - t_before, 0)
            self.report["published_rows"] = key.report["sides_kept"]
            self.report["row_cuts"] = self._rows.cuts
            return hardened
        hardened, key = harden(package, lower_mw=box.lower_mw, upper_mw=box.upper_mw,
                               cache=self.screening_cache)
        self._count(key.report["time_s"], key.report["lps"])
        return hardened

    def _count(self, dt: float, lps: int) -> None:
        """Screening time and LPs of this frame (frames.csv dso_time_s holds them)."""
        self.report.update(screening_time_s=self.report.get("screening_time_s", 0.0) + dt,
                           screening_lps=self.report.get("screening_lps", 0) + lps)

    def _final(self, round_: int, v: Verdict, *, published: bool = True) -> FrameStep:
        self.frame = None
        self.report.update(status=str(v.verdict), safe=v.safe, dispatched=v.dispatch)
        message = "; ".join(m for m in (v.message, getattr(self, "_islands", "")) if m)
        if message:
            self.report["message"] = message
        return FrameStep(round_, verdict=v, report=self.report, published=published)

