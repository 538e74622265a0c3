"""STAND-IN (branch w2-envelope only): a minimal package format 2 so that the envelope code
can be written and tested before the format engineer's ``HardenedPackage`` lands. At merge
the format engineer's module replaces this file; ``PrivacyLevel`` then lives in
``flexcore.exchange.enums``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from flexcore.exchange.limits import FloatArray
from flexcore.exchange.package import PackageError, PointInfo


class PrivacyLevel(StrEnum):
    FULL = "full"
    EXACT = "exact"
    ENVELOPE = "envelope"


@dataclass(frozen=True)
class HardenedPackage:
    """Package format 2 (see the shared design); only what the envelope needs is checked."""

    privacy: PrivacyLevel
    columns: tuple[str, ...]
    points: tuple[PointInfo, ...]
    p_flex_mw: FloatArray
    rows_a: tuple[FloatArray, ...] = ()
    rows_rhs: tuple[FloatArray, ...] = ()
    excluded: tuple[int, ...] = ()
    lower_mw: FloatArray | None = None
    upper_mw: FloatArray | None = None
    screening: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.columns)
        if np.shape(self.p_flex_mw) != (len(self.points), n):
            raise PackageError(f"array 'p_flex_mw' has shape {np.shape(self.p_flex_mw)}, "
                               f"expected {(len(self.points), n)}")
        for name in ("lower_mw", "upper_mw"):
            arr = getattr(self, name)
            if arr is not None and (np.shape(arr) != (n,) or not np.isfinite(arr).all()):
                raise PackageError(f"array '{name}' must hold {n} finite values")

    @property
    def m(self) -> int:
        return len(self.points)

    @property
    def n(self) -> int:
        return len(self.columns)

    def arrays(self) -> dict[str, FloatArray]:
        out = {"p_flex_mw": self.p_flex_mw}
        for i, (a, rhs) in enumerate(zip(self.rows_a, self.rows_rhs)):
            out[f"a_{i}"], out[f"rhs_{i}"] = a, rhs
        if self.lower_mw is not None and self.upper_mw is not None:
            out["lower_mw"], out["upper_mw"] = self.lower_mw, self.upper_mw
        return out
