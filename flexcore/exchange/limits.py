"""Operating limits, and the checks and error statistics that every side uses.

One :class:`Limits` describes the voltage band and the signed loading band (sign
conventions of docs/method.md: loadings in percent of the rating, signed by the direction of
active power).
:func:`violations` ranks the AC values outside them; :class:`ErrorStats` is the MAE / RMSE /
max of a set of prediction errors. The linearizer's validation, the validator agent and the
clearing's diagnosis all use these, so "violated" and "MAE" mean one thing everywhere.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from flexcore.errors import FlexcosimError

#: an AC value counts as violating a limit only beyond this (p.u. or %): power-flow noise
VIOLATION_TOL = 1e-9
#: numpy array types of the exchange and the market
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class LimitsError(FlexcosimError, ValueError):
    """Limits that are not finite or not ordered; the message names the key."""


@dataclass(frozen=True)
class Limits:
    """Voltage (p.u.) and signed loading (%) limits; defaults 0.95-1.05 p.u., -100..100 %."""

    vm_min_pu: float = 0.95
    vm_max_pu: float = 1.05
    loading_min_percent: float = -100.0
    loading_max_percent: float = 100.0

    def __post_init__(self) -> None:
        for key, value in self.as_dict().items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise LimitsError(f"limit '{key}' must be a finite number, got {value!r}")
            object.__setattr__(self, key, float(value))
        if not self.vm_min_pu < self.vm_max_pu:
            raise LimitsError(f"limits: vm_min_pu ({self.vm_min_pu}) must be below vm_max_pu "
                              f"({self.vm_max_pu})")
        if not self.loading_min_percent < self.loading_max_percent:
            raise LimitsError(f"limits: loading_min_percent ({self.loading_min_percent}) must "
                              f"be below loading_max_percent ({self.loading_max_percent})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "limits") -> Limits:
        """From ``{vm_min_pu: ..., ...}`` (missing keys keep their defaults); unknown keys
        and bad values raise :class:`LimitsError` naming them."""
        unknown = sorted(set(data) - set(cls().as_dict()))
        if unknown:
            raise LimitsError(f"{where}: unknown key(s) {unknown}; allowed: "
                              f"{sorted(cls().as_dict())}")
        try:
            return cls(**dict(data))
        except LimitsError as exc:
            raise LimitsError(f"{where}: {exc}") from None

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def vm_violated(self, vm_pu: npt.ArrayLike, tol: float = VIOLATION_TOL) -> BoolArray:
        vm = np.asarray(vm_pu, float)
        return (vm < self.vm_min_pu - tol) | (vm > self.vm_max_pu + tol)

    def loading_violated(self, loading_percent: npt.ArrayLike, tol: float = VIOLATION_TOL
                         ) -> BoolArray:
        ld = np.asarray(loading_percent, float)
        return (ld < self.loading_min_percent - tol) | (ld > self.loading_max_percent + tol)


@dataclass(frozen=True)
class Violation:
    """One AC value beyond its limit: ``amount`` = |value - limit| (p.u. or %)."""

    kind: str        # "vm_pu" or "loading_percent"
    key: str         # the row key (package rows) or element name
    value: float
    limit: float
    amount: float

    @property
    def severity(self) -> float:
        """``amount`` relative to the band it belongs to (0.05 p.u., 100 %): ranks voltages
        and loadings on one scale."""
        return self.amount / (100.0 if self.kind == "loading_percent" else 0.05)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def violations(limits: Limits, *, vm_pu: npt.ArrayLike, vm_keys: Sequence[str],
               loading_percent: npt.ArrayLike, loading_keys: Sequence[str],
               tol: float = VIOLATION_TOL) -> list[Violation]:
    """The AC values outside ``limits``, most severe first."""
    out = []
    vm = np.asarray(vm_pu, float)
    for k in np.flatnonzero(limits.vm_violated(vm, tol)):
        x = float(vm[k])
        limit = limits.vm_min_pu if x < limits.vm_min_pu else limits.vm_max_pu
        out.append(Violation("vm_pu", str(vm_keys[int(k)]), x, limit, abs(x - limit)))
    ld = np.asarray(loading_percent, float)
    for k in np.flatnonzero(limits.loading_violated(ld, tol)):
        x = float(ld[k])
        limit = limits.loading_max_percent if x > limits.loading_max_percent \
            else limits.loading_min_percent
        out.append(Violation("loading_percent", str(loading_keys[int(k)]), x, limit,
                             abs(x - limit)))
    out.sort(key=lambda v: -v.severity)
    return out


@dataclass(frozen=True)
class ErrorStats:
    """MAE, RMSE and largest absolute error of ``n`` prediction errors (NaN when n = 0:
    an empty set has no error, and 0 would claim one was measured)."""

    n: int
    mae: float
    rmse: float
    max_abs: float

    @classmethod
    def of(cls, errors: npt.ArrayLike) -> ErrorStats:
        e = np.asarray(errors, float)
        if not e.size:
            return cls(0, math.nan, math.nan, math.nan)
        a = np.abs(e)
        return cls(int(e.size), float(a.mean()), float(np.sqrt(np.mean(e * e))),
                   float(a.max()))

    def within(self, tol: float) -> bool:
        """Accurate to ``tol``: MAE at most ``tol`` (vacuously true without rows)."""
        return self.n == 0 or self.mae <= tol
