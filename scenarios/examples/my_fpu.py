"""A tiny example FPU plug-in: a fridge that can pause for one frame.

See the README, "Writing a flexibility unit"; scenarios/custom_fpu.toml uses it."""
from __future__ import annotations

from flexcore.fpu.base import FlexibilityUnit


class MyUnit(FlexibilityUnit):
    """Consumes ``power_kw`` continuously; can pause (upward only), never twice in a row."""

    alias = "my_unit"

    def __init__(self, unit_id, building_id, *, rng, context=None, power_kw: float = 0.5,
                 price: float = 30.0):
        super().__init__(unit_id, building_id, rng=rng, context=context)
        self.power_kw = float(power_kw)
        self.price_up_eur_per_mwh = float(price)
        self.paused = False

    def baseline_mw(self, frame):
        return -self.power_kw / 1000.0

    def feasible_range_mw(self, frame):
        return 0.0, (0.0 if self.paused else self.power_kw / 1000.0)

    def advance(self, frame, power_mw):
        self.paused = power_mw > self.baseline_mw(frame) + 1e-12

    def state(self):
        return {"paused": float(self.paused)}
