"""Statuses and choices that cross the DSO/TSO boundary, as string enums.

They are ``StrEnum``s: a member equals its string (``ClearingStatus.OPTIMAL == "optimal"``),
serialises to it in JSON and Parquet, and :meth:`parse` accepts the plain string at the
edges (files, TOML, command line), naming the valid choices when it is not one.
"""
from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from flexcore.errors import FlexcosimError

_E = TypeVar("_E", bound="_Choice")


class _Choice(StrEnum):
    @classmethod
    def parse(cls: type[_E], value: object, *, where: str = "") -> _E:
        """The member for ``value`` (a member or its string); FlexcosimError otherwise."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        prefix = f"{where}: " if where else ""
        raise FlexcosimError(f"{prefix}{value!r} is not a valid {cls.__name__}; choose one "
                             f"of {list(cls.values())}")

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class ClearingStatus(_Choice):
    """Outcome of one clearing (``CLEARING.json`` ``status``)."""

    OPTIMAL = "optimal"          #: proven optimal
    INFEASIBLE = "infeasible"    #: no activation meets the request within the limits
    TIME_LIMIT = "time_limit"    #: a feasible, not proven optimal solution at the time limit
    ERROR = "error"              #: the solver failed (the message says how)

    @property
    def has_solution(self) -> bool:
        return self in (ClearingStatus.OPTIMAL, ClearingStatus.TIME_LIMIT)


class FrameVerdict(_Choice):
    """The DSO's final word on one frame of the co-simulation (``frames.csv`` ``status``).

    ``optimal``: cleared, AC-safe and dispatched; ``unsafe``: cleared but an AC limit is
    violated after the last refinement round (not dispatched unless ``dispatch_unsafe``);
    ``dso_failed``: no operating point converged, nothing was cleared; the clearing
    statuses ``infeasible``, ``time_limit`` and ``error`` pass through unchanged.
    """

    OPTIMAL = "optimal"
    UNSAFE = "unsafe"
    INFEASIBLE = "infeasible"
    TIME_LIMIT = "time_limit"
    ERROR = "error"
    DSO_FAILED = "dso_failed"


class Objective(_Choice):
    """What the clearing minimises (METHOD notes in ``docs/method.md``)."""

    ABS_COST = "abs_cost"                      #: sum_j c_j |x_j| (default)
    SIGNED_COST = "signed_cost"                #: the source's literal c^T x
    ABS_COST_PROXIMITY = "abs_cost_proximity"  #: abs_cost + w * sum |dP_i|


class PrivacyLevel(_Choice):
    """What a published sensitivity package reveals (docs/method.md, "Privacy").

    ``full``: format 1, base values, limits and keyed rows (research only); ``exact``:
    format 2, normalised constraint rows ``a x <= rhs`` that can bind, same optimum;
    ``envelope``: format 2, per-bid activation ranges only.
    """

    FULL = "full"
    EXACT = "exact"
    ENVELOPE = "envelope"
