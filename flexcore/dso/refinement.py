"""The DSO's round policy for one frame, and its re-linearisation schedule.

:class:`RefinementSession` is the one place that decides, after each clearing, whether the
DSO refines (adds the cleared activation as an operating point and asks the TSO to clear
again) or gives its final :class:`Verdict`. ``coordinate()`` (flexcore.study), the DSO
agent and the evaluation all drive it (docs/method.md "Refinement rounds and the safety rule"):

- the TSO clears against the published package, whose limits carry the solver margin
  (``solver_margin``, :func:`flexcore.dso.safety.with_solver_margin`); the DSO checks each
  optimal clearing in AC at the *nominal* limits, against its own prediction from the
  (unmargined) package. *Accurate*: the AC power flow converged and the voltage and loading
  MAE are within the tolerances;
- an unsafe, converged clearing: the rows AC violates are shifted by the observed mismatch
  at the selected operating point (``tighten_unsafe``, :func:`flexcore.dso.safety.tighten`)
  and a refinement point is added at the clearing; a safe, inaccurate one is only refined;
- the frame ends when a clearing is safe and accurate [``stop_when_accurate``], after round
  ``max_rounds``, when a clearing is not ``optimal``, when the AC power flow at a clearing
  does not converge, or when the refined point does not converge;
- the outcome: the last clearing if it is AC-safe (as without the rule); else the cheapest
  AC-safe clearing of the earlier rounds [``keep_cheapest_safe``] (verdict ``optimal``,
  ``rounds`` = its round: the TSO dispatches that round's clearing). Without an AC-safe
  round the DSO refuses, with the reason in the message: the last clearing's status if it
  is not optimal (``infeasible``: the linear model, with the observed AC mismatches shifted
  in, admits no activation), else ``unsafe`` (dispatched only with ``dispatch_unsafe``); a
  clearing that activates an undeliverable bid (isolated bus) is refused as ``unsafe``.

:class:`RelinearizationSchedule` decides per frame whether every operating point is
recomputed or only the zero point.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from flexcore.dso.linearizer import Linearizer, PointNotConverged
from flexcore.dso.safety import TighteningReport, tighten, with_solver_margin
from flexcore.dso.validation import ValidationReport
from flexcore.exchange.clearing import ClearingResult
from flexcore.exchange.dispatch import RoundOutcome, choose_dispatch
from flexcore.exchange.enums import ClearingStatus, FrameVerdict
from flexcore.exchange.package import SensitivityPackage


@dataclass(frozen=True)
class RefinementPolicy:
    """When the DSO refines and what it dispatches."""

    max_rounds: int = 2
    tol_vm_mae_pu: float = 1e-5
    tol_loading_mae_percent: float = 5e-3
    dispatch_unsafe: bool = False
    stop_when_accurate: bool = True
    #: shift the rows AC violates by the observed mismatch (flexcore.dso.safety.tighten)
    tighten_unsafe: bool = True
    #: publish packages with limits tightened by the solver margin (with_solver_margin)
    solver_margin: bool = True
    #: when the last round is not AC-safe (unsafe, not optimal, not converged), dispatch the
    #: cheapest earlier AC-safe round instead of refusing (a safe last round is dispatched)
    keep_cheapest_safe: bool = True

    def __post_init__(self) -> None:
        if self.max_rounds < 0:
            raise ValueError(f"max_rounds must be >= 0, got {self.max_rounds}")


@dataclass(frozen=True)
class RoundRecord:
    """One round: the clearing, its AC check (None unless optimal) and the DSO's time
    (AC check of this round; refinement for the next round is added to the next one)."""

    round: int
    clearing: ClearingResult
    validation: ValidationReport | None
    accurate: bool
    dso_time_s: float
    rows_tightened: int = 0  # rows shifted after this round (tighten_unsafe)


@dataclass(frozen=True)
class Verdict:
    """The DSO's final word on a frame."""

    verdict: FrameVerdict
    safe: bool
    dispatch: bool
    validation: ValidationReport | None
    rounds: int  # round of the final clearing (0 = no refinement)
    message: str = ""
    clearing: ClearingResult | None = None


class RefinementSession:
    """The round policy of one frame over the DSO's :class:`Linearizer`.

    ``open(package)`` starts round 0 and returns the package to publish; ``on_clearing``
    returns the next package to publish (round k+1) or the final :class:`Verdict`.
    ``package`` is the DSO's own (unmargined, tightened) package of the current round,
    ``records`` keeps every round, ``tightenings`` every :func:`~flexcore.dso.safety.tighten`
    report."""

    def __init__(self, linearizer: Linearizer, *, policy: RefinementPolicy | None = None
                 ) -> None:
        self.lin = linearizer
        self.policy = policy or RefinementPolicy()
        self.package: SensitivityPackage | None = None
        self.round = 0
        self.records: list[RoundRecord] = []
        self.tightenings: list[TighteningReport] = []
        self.verdict: Verdict | None = None
        self._refine_time_s = 0.0

    def published(self, package: SensitivityPackage | None = None) -> SensitivityPackage:
        """What the TSO clears against: ``package`` (default: the current one) with the
        solver margin when the policy says so."""
        pkg = self.package if package is None else package
        if pkg is None:
            raise RuntimeError("no open round (call open(package) first)")
        return with_solver_margin(pkg) if self.policy.solver_margin else pkg

    def open(self, package: SensitivityPackage) -> SensitivityPackage:
        """Start the frame with ``package`` (round 0); returns the package to publish."""
        self.package, self.round, self.records, self.verdict = package, 0, [], None
        self.tightenings = []
        self._refine_time_s = 0.0
        return self.published()

    @staticmethod
    def failed(message: str) -> Verdict:
        """The verdict of a frame whose package could not be made (no point converged)."""
        return Verdict(FrameVerdict.DSO_FAILED, safe=False, dispatch=False, validation=None,
                       rounds=0, message=message or "no operating point converged")

    def on_clearing(self, clearing: ClearingResult) -> SensitivityPackage | Verdict:
        """The next package to publish (round k+1), or the final verdict."""
        if self.package is None or self.verdict is not None:
            raise RuntimeError("on_clearing() needs an open round (call open(package) first)")
        pol, k = self.policy, self.round
        t0 = time.perf_counter()
        if clearing.status != ClearingStatus.OPTIMAL:
            self.records.append(RoundRecord(k, clearing, None, False, self._refine_time_s))
            status = FrameVerdict.parse(clearing.status)
            why = clearing.diagnosis.message if clearing.diagnosis else clearing.message
            shifted = sum(t.n for t in self.tightenings)
            if status == FrameVerdict.INFEASIBLE and shifted:
                why = (f"infeasible in round {k}: the linear model with the observed AC "
                       f"mismatches ({shifted} row shift(s) so far) admits no activation for "
                       f"the request; market: {why or 'infeasible'}")
            return self._final(why or f"clearing status {status}", refused=status)
        off = [b for b, _ in self.lin.undeliverable
               if abs(clearing.activation_mw.get(b, 0.0)) > 1e-9]
        if off:  # bids on isolated buses deliver nothing: never dispatch such a clearing
            self.records.append(RoundRecord(k, clearing, None, False, self._refine_time_s))
            return self._final(f"the clearing activates {len(off)} undeliverable bid(s) on "
                               f"isolated buses ({', '.join(off[:5])}): their volume must be 0",
                               refused=FrameVerdict.UNSAFE)
        v = self.lin.validate(clearing, package=self.package)
        accurate = v.accurate(tol_vm_mae_pu=pol.tol_vm_mae_pu,
                              tol_loading_mae_percent=pol.tol_loading_mae_percent)
        dso_time = self._refine_time_s + time.perf_counter() - t0
        final = ((pol.stop_when_accurate and accurate and v.safe) or k >= pol.max_rounds
                 or not v.converged)
        note = ""
        if not final:
            t1 = time.perf_counter()
            x = clearing.activation_vector(self.package.columns)
            package, n_shift = self.package, 0
            if not v.safe and pol.tighten_unsafe and clearing.operating_point is not None:
                package, rep = tighten(
                    package, point=int(clearing.operating_point), clearing_activation=x,
                    ac_vm_pu=v.ac_vm_pu, ac_loading_percent=v.ac_loading_percent,
                    limits=self.lin.limits, lower_mw=self.lin.bids.lower_mw,
                    upper_mw=self.lin.bids.upper_mw)
                self.tightenings.append(rep)
                n_shift = rep.n
            self.records.append(RoundRecord(k, clearing, v, accurate, dso_time, n_shift))
            try:
                self.package = self.lin.refine(package, x, label=f"refine {k + 1}")
            except PointNotConverged as exc:
                final, note = True, f"refinement stopped: {exc}"
            else:
                self._refine_time_s = time.perf_counter() - t1
                self.round = k + 1
                return self.published()
        else:
            self.records.append(RoundRecord(k, clearing, v, accurate, dso_time))
        return self._final("" if v.safe else _unsafe_message(v, k), note=note)

    def _final(self, why: str, *, note: str = "", refused: FrameVerdict | None = None
               ) -> Verdict:
        """The frame's verdict: the one dispatch rule (:func:`flexcore.exchange.dispatch.
        choose_dispatch`) over the rounds so far. ``why``: why the last round is not
        dispatchable as it is (empty: it is AC-safe); ``refused``: the DSO refuses it
        without an AC check, with this verdict; ``note``: appended to the message."""
        pol = self.policy
        last = self.records[-1]
        outcomes = [_outcome(r) for r in self.records[:-1]] + [_outcome(last, refused)]
        choice = choose_dispatch(outcomes, keep_cheapest_safe=pol.keep_cheapest_safe,
                                 dispatch_unsafe=pol.dispatch_unsafe)
        rec = next((r for r in self.records if r.round == choice.round), last)
        if rec is not last:
            why = (f"dispatched round {rec.round}, the cheapest AC-safe clearing (last round "
                   f"{last.round}: {why})")
        elif choice.dispatched and why:
            why += " (dispatched: dispatch_unsafe)"
        message = "; ".join(m for m in (why, note) if m)
        safe = rec.validation is not None and rec.validation.safe
        self.verdict = Verdict(choice.verdict, safe=choice.dispatched and safe,
                               dispatch=choice.dispatched, validation=rec.validation,
                               rounds=rec.round, clearing=rec.clearing, message=message)
        return self.verdict


def _cost(clearing: ClearingResult) -> float:
    rate = clearing.cost_eur_per_h
    return float(rate if rate is not None else math.nan)


def _outcome(rec: RoundRecord, refused: FrameVerdict | None = None) -> RoundOutcome:
    """A round as the dispatch rule sees it (only checked rounds can be safe; ``refused``:
    the DSO refused it without an AC check, with this verdict)."""
    v = rec.validation
    return RoundOutcome(rec.round, rec.clearing.status, v is not None and v.safe,
                        _cost(rec.clearing), refused=refused)


def _unsafe_message(v: ValidationReport, k: int) -> str:
    if not v.converged:
        return f"AC power flow at the cleared activation did not converge ({v.message})"
    w = v.violations[0]
    return (f"{len(v.violations)} AC limit(s) violated after {k} refinement round(s); worst "
            f"{w.kind} {w.key} = {w.value:.4f} (limit {w.limit})")


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class ScheduleDecision:
    due: bool  # recompute every operating point (else only the zero point)
    moved_mw: float  # sum |dP_fix| since the last full linearisation (inf: none yet)
    reason: str  # "first", "every", "new_day", "moved" or "" (not due)


@dataclass
class RelinearizationSchedule:
    """Every operating point is recomputed at the first frame, every ``every_frames``
    frames, on a new day, or when the fixed injections moved by more than ``threshold_mw``
    (sum of absolute changes) since the last full linearisation; otherwise only the zero
    point. Call :meth:`done` after a successful full linearisation. The co-simulation's DSO
    (:class:`flexcore.dso.frame.DsoFrames`) asks only at frames that publish a package, with
    ``new_day`` kept true from the first frame of a day until a full linearisation."""

    every_frames: int
    threshold_mw: float
    _last_frame: int | None = field(default=None, init=False)
    _last_fix: np.ndarray | None = field(default=None, init=False)

    def decide(self, frame: int, fix_mw: np.ndarray, *, new_day: bool) -> ScheduleDecision:
        fix = np.asarray(fix_mw, float)
        moved = math.inf if self._last_fix is None else float(np.abs(fix - self._last_fix).sum())
        if self._last_frame is None:
            reason = "first"
        elif frame - self._last_frame >= self.every_frames:
            reason = "every"
        elif new_day:
            reason = "new_day"
        elif moved > self.threshold_mw:
            reason = "moved"
        else:
            reason = ""
        return ScheduleDecision(bool(reason), moved, reason)

    def done(self, frame: int, fix_mw: np.ndarray) -> None:
        """A full linearisation at ``frame`` with fixed injections ``fix_mw`` succeeded."""
        self._last_frame, self._last_fix = int(frame), np.asarray(fix_mw, float).copy()
