"""The DSO's round policy for one frame, and its re-linearisation schedule.

:class:`RefinementSession` is the one place that decides, after each clearing, whether the
DSO refines (adds the cleared activation as an operating point and asks the TSO to clear
again) or gives its final :class:`Verdict`. ``coordinate()`` (flexcore.study), the DSO
agent and the evaluation all drive it (docs/method.md "Refinement rounds and the safety rule"):

- a clearing that is not ``optimal`` ends the frame; its status passes through;
- otherwise the DSO checks it in AC at the activation, against its own prediction from the
  package it published. *Accurate*: the AC power flow converged and the voltage and
  loading MAE are within the tolerances;
- final when (accurate and AC-safe) [only with ``stop_when_accurate``], or at round
  ``max_rounds``, or when the refined point does not converge; the verdict is ``optimal``
  if AC-safe, else ``unsafe`` (dispatched only with ``dispatch_unsafe``).

:class:`RelinearizationSchedule` decides per frame whether every operating point is
recomputed or only the zero point.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from flexcore.dso.linearizer import Linearizer, PointNotConverged
from flexcore.dso.validation import ValidationReport
from flexcore.exchange.clearing import ClearingResult
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

    ``open(package)`` starts round 0; ``on_clearing(clearing)`` returns the next package
    (round k+1) or the final :class:`Verdict`. ``records`` keeps every round."""

    def __init__(self, linearizer: Linearizer, *, policy: RefinementPolicy | None = None
                 ) -> None:
        self.lin = linearizer
        self.policy = policy or RefinementPolicy()
        self.package: SensitivityPackage | None = None
        self.round = 0
        self.records: list[RoundRecord] = []
        self.verdict: Verdict | None = None
        self._refine_time_s = 0.0

    def open(self, package: SensitivityPackage) -> SensitivityPackage:
        """Start the frame with ``package`` (round 0); returns it for publishing."""
        self.package, self.round, self.records, self.verdict = package, 0, [], None
        self._refine_time_s = 0.0
        return package

    @staticmethod
    def failed(message: str) -> Verdict:
        """The verdict of a frame whose package could not be made (no point converged)."""
        return Verdict(FrameVerdict.DSO_FAILED, safe=False, dispatch=False, validation=None,
                       rounds=0, message=message or "no operating point converged")

    def on_clearing(self, clearing: ClearingResult) -> SensitivityPackage | Verdict:
        """The next package (round k+1), or the final verdict."""
        if self.package is None or self.verdict is not None:
            raise RuntimeError("on_clearing() needs an open round (call open(package) first)")
        pol, k = self.policy, self.round
        t0 = time.perf_counter()
        if clearing.status != ClearingStatus.OPTIMAL:
            self.records.append(RoundRecord(k, clearing, None, False, self._refine_time_s))
            status = FrameVerdict.parse(clearing.status)
            why = clearing.diagnosis.message if clearing.diagnosis else clearing.message
            return self._final(Verdict(status, safe=False, dispatch=False, validation=None,
                                       rounds=k, clearing=clearing,
                                       message=why or f"clearing status {status}"))
        v = self.lin.validate(clearing, package=self.package)
        accurate = v.accurate(tol_vm_mae_pu=pol.tol_vm_mae_pu,
                              tol_loading_mae_percent=pol.tol_loading_mae_percent)
        self.records.append(RoundRecord(k, clearing, v, accurate,
                                        self._refine_time_s + time.perf_counter() - t0))
        final = (pol.stop_when_accurate and accurate and v.safe) or k >= pol.max_rounds
        note = ""
        if not final:
            t1 = time.perf_counter()
            try:
                self.package = self.lin.refine(self.package, clearing, label=f"refine {k + 1}")
            except PointNotConverged as exc:
                final, note = True, f"refinement stopped: {exc}"
            else:
                self._refine_time_s = time.perf_counter() - t1
                self.round = k + 1
                return self.package
        verdict = FrameVerdict.OPTIMAL if v.safe else FrameVerdict.UNSAFE
        dispatch = v.safe or pol.dispatch_unsafe
        message = note
        if not v.safe:
            message = "; ".join(m for m in (_unsafe_message(v, k), note) if m)
            if dispatch:
                message += " (dispatched: dispatch_unsafe)"
        return self._final(Verdict(verdict, safe=v.safe, dispatch=dispatch, validation=v,
                                   rounds=k, clearing=clearing, message=message))

    def _final(self, verdict: Verdict) -> Verdict:
        self.verdict = verdict
        return verdict


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
    point. Call :meth:`done` after a successful full linearisation."""

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
