"""Flexible (shiftable) part of a building's electricity demand with a bounded backlog."""
from __future__ import annotations

from typing import Any

import numpy as np

from flexcore.district.daytypes import Frame

from .base import FlexibilityUnit, UnitContext


class FlexibleLoad(FlexibilityUnit):
    """A share of the building load that can be postponed or brought forward.

    ``L`` = building load (``context.load_mw``), flexible part ``s L`` with ``share`` s
    (0.2). Backlog ``B`` (kWh, > 0 = consumption owed, < 0 = consumed in advance) evolves
    as ``dB = (s L - c) dt`` for the actual flexible consumption ``c``; ``|B| <= B_max``
    with ``B_max = max_backlog_h`` (2 h) x the mean flexible power
    ``s * annual_kwh / 8760`` (``annual_kwh`` from ``context.building``, or given).
    Baseline (energy-neutral pay-back): ``c = clip(s L + B / payback_h, 0, c_max)`` with
    ``payback_h`` 4 h and ``c_max = s L + extra_kw`` (``extra_kw`` default 2 x the mean
    flexible power). Upward = consume less (postpone) down to 0 while ``B <= B_max``;
    downward = consume more up to ``c_max`` while ``B >= -B_max``. Prices 70 / 40 EUR/MWh,
    jittered +-10 %. :meth:`profile_mw` is ``-s L`` (the flexible part is inside the
    building profile).
    """

    alias = "flexible_load"

    def __init__(self, unit_id: str, building_id: str, *, rng: np.random.Generator,
                 context: UnitContext | None = None, share: float = 0.2,
                 annual_kwh: float | None = None, max_backlog_h: float = 2.0,
                 payback_h: float = 4.0, extra_kw: float | None = None,
                 price_up_eur_per_mwh: float = 70.0, price_down_eur_per_mwh: float = 40.0,
                 **params: Any) -> None:
        super().__init__(unit_id, building_id, rng=rng, context=context, **params)
        if not 0.0 <= share <= 1.0 or payback_h <= 0 or max_backlog_h < 0:
            raise ValueError(f"{unit_id}: 0 <= share <= 1, payback_h > 0, max_backlog_h >= 0")
        annual = (annual_kwh if annual_kwh is not None
                  else self.context.building.get("annual_kwh", 0.0))
        mean_flex_kw = share * float(annual) / 8760.0
        self.share = float(share)
        self.max_backlog_kwh = max_backlog_h * mean_flex_kw
        self.payback_h = float(payback_h)
        self.extra_kw = float(extra_kw if extra_kw is not None else 2.0 * mean_flex_kw)
        self.backlog_kwh = 0.0
        jitter = rng.uniform(0.9, 1.1, size=2)
        self.price_up_eur_per_mwh = float(price_up_eur_per_mwh * jitter[0])
        self.price_down_eur_per_mwh = float(price_down_eur_per_mwh * jitter[1])

    def _flex_kw(self, frame: Frame) -> float:
        return self.share * max(0.0, float(self.context.load_mw(frame))) * 1000.0

    def _limits_kw(self, frame: Frame) -> tuple[float, float, float]:
        """(c_low, c_base, c_high) flexible consumption in kW."""
        dt = frame.duration_h
        flex = self._flex_kw(frame)
        c_max = flex + self.extra_kw
        base = min(c_max, max(0.0, flex + self.backlog_kwh / self.payback_h))
        low = max(0.0, flex - (self.max_backlog_kwh - self.backlog_kwh) / dt)
        high = min(c_max, flex + (self.backlog_kwh + self.max_backlog_kwh) / dt)
        return min(low, base), base, max(high, base)

    def baseline_mw(self, frame: Frame) -> float:
        return -self._limits_kw(frame)[1] / 1000.0

    def profile_mw(self, frame: Frame) -> float:
        return -self._flex_kw(frame) / 1000.0

    def feasible_range_mw(self, frame: Frame) -> tuple[float, float]:
        low, base, high = self._limits_kw(frame)
        return -(high - base) / 1000.0, (base - low) / 1000.0

    def advance(self, frame: Frame, power_mw: float) -> None:
        consumed_kw = max(0.0, -power_mw * 1000.0)
        self.backlog_kwh += (self._flex_kw(frame) - consumed_kw) * frame.duration_h
        self.backlog_kwh = float(np.clip(self.backlog_kwh, -self.max_backlog_kwh,
                                         self.max_backlog_kwh))

    def state(self) -> dict[str, float]:
        return {"backlog_kwh": self.backlog_kwh}
