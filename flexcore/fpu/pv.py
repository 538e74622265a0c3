"""PV curtailment: downward flexibility of a building's PV system."""
from __future__ import annotations

from typing import Any

import numpy as np

from flexcore.district.daytypes import Frame

from .base import FlexibilityUnit, UnitContext


class PVCurtailment(FlexibilityUnit):
    """Curtail the building's PV feed-in (``context.pv_mw``), downward only.

    Baseline = the PV feed-in (already in the building profile: :meth:`profile_mw`
    returns it). Downward offer: the whole current feed-in; price = opportunity cost = the
    lost feed-in tariff ``feed_in_tariff_eur_per_mwh`` (80). No state.
    """

    alias = "pv_curtailment"
    requires_pv = True

    def __init__(self, unit_id: str, building_id: str, *, rng: np.random.Generator,
                 context: UnitContext | None = None, feed_in_tariff_eur_per_mwh: float = 80.0,
                 **params: Any) -> None:
        super().__init__(unit_id, building_id, rng=rng, context=context, **params)
        self.price_down_eur_per_mwh = float(feed_in_tariff_eur_per_mwh)
        self.curtailed_mwh = 0.0

    def baseline_mw(self, frame: Frame) -> float:
        return max(0.0, float(self.context.pv_mw(frame)))

    def profile_mw(self, frame: Frame) -> float:
        return self.baseline_mw(frame)

    def feasible_range_mw(self, frame: Frame) -> tuple[float, float]:
        return -self.baseline_mw(frame), 0.0

    def advance(self, frame: Frame, power_mw: float) -> None:
        self.curtailed_mwh += (self.baseline_mw(frame) - power_mw) * frame.duration_h

    def state(self) -> dict[str, float]:
        return {"curtailed_mwh": self.curtailed_mwh}
