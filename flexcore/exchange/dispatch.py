"""Which round of a frame is dispatched: the last rule of the refinement policy.

docs/method.md "Refinement rounds and the safety rule" (the rule of
:class:`flexcore.dso.refinement.RefinementSession`, whose options ``keep_cheapest_safe``
and ``dispatch_unsafe`` it takes): after the last round,

- the last round is dispatched if its clearing has a solution and is AC-safe (its model is
  the most refined);
- else, with ``keep_cheapest_safe``, the cheapest AC-safe earlier round (ties: the later
  one), verdict ``optimal``;
- else nothing: verdict ``unsafe`` when the last clearing has a solution (AC violates a
  limit or did not converge; dispatched anyway only with ``dispatch_unsafe``), else the
  last clearing's status (``infeasible``, ``time_limit``, ``error``); a last round the DSO
  refused without an AC check (:attr:`RoundOutcome.refused`) gives that verdict and is never
  dispatched.

The single DSO's :class:`flexcore.dso.refinement.RefinementSession`, the region's TSO
(``agents.region_tso``, which may import nothing of the grid or DSO side) and the in-process
study (:func:`flexcore.region.study.run_region`) all call :func:`choose_dispatch`; in the
region "AC-safe" there means every DSO's check of the round found no
violated row (and the region's AC power flow converged).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flexcore.exchange.enums import ClearingStatus, FrameVerdict


@dataclass(frozen=True)
class RoundOutcome:
    """One round of a frame as the dispatch rule sees it."""

    round: int
    status: ClearingStatus
    #: the clearing was checked in AC, converged and violates no limit
    safe: bool
    cost_eur_per_h: float = math.nan
    #: the DSO refused the clearing without an AC check, with this verdict (e.g. ``unsafe``:
    #: it activates a bid on an isolated bus; the single DSO checks only ``optimal``
    #: clearings): never dispatched, not even with ``dispatch_unsafe``
    refused: FrameVerdict | None = None


@dataclass(frozen=True)
class DispatchChoice:
    """The frame's verdict and the round whose clearing is dispatched (None: nothing)."""

    verdict: FrameVerdict
    round: int | None
    message: str = ""

    @property
    def dispatched(self) -> bool:
        return self.round is not None


def choose_dispatch(rounds: Sequence[RoundOutcome], *, keep_cheapest_safe: bool = True,
                    dispatch_unsafe: bool = False) -> DispatchChoice:
    """The dispatch rule of the module doc over a frame's rounds (in order, at least one)."""
    if not rounds:
        raise ValueError("choose_dispatch needs at least one round")
    last = rounds[-1]
    ok = last.status.has_solution and last.refused is None
    if ok and last.safe:
        return DispatchChoice(FrameVerdict.parse(last.status), last.round)
    why = f"last round {last.round}: " + (
        "AC-unsafe" if ok else f"refused ({last.refused.value})" if last.refused is not None
        else f"clearing {last.status.value}")
    safe = [r for r in rounds[:-1] if r.safe and r.status.has_solution and r.refused is None]
    if safe and keep_cheapest_safe:
        best = safe[0]
        for r in safe[1:]:
            if r.cost_eur_per_h <= best.cost_eur_per_h + 1e-9 * (1.0 + abs(best.cost_eur_per_h)):
                best = r
        return DispatchChoice(FrameVerdict.parse(best.status), best.round,
                              f"dispatched round {best.round}, the cheapest AC-safe clearing "
                              f"({why})")
    if last.refused is not None:
        return DispatchChoice(last.refused, None, why)
    if not ok:
        return DispatchChoice(FrameVerdict.parse(last.status), None, why)
    if dispatch_unsafe:
        return DispatchChoice(FrameVerdict.UNSAFE, last.round,
                              f"{why}; dispatched: dispatch_unsafe")
    return DispatchChoice(FrameVerdict.UNSAFE, None, f"{why}; not dispatched")
