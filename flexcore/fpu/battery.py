"""Home battery: upward = discharge (bounded by SOC), downward = charge (bounded by headroom)."""
from __future__ import annotations

from typing import Any

import numpy as np

from flexcore.district.daytypes import Frame

from .base import FlexibilityUnit, UnitContext


class HomeBattery(FlexibilityUnit):
    """A stationary home battery that idles (baseline 0) unless activated.

    Parameters: ``capacity_kwh`` (10), ``power_kw`` (5, both directions), ``soc_init``
    (0.5), ``soc_min`` (0.1), ``soc_max`` (0.95), ``eta_charge`` / ``eta_discharge``
    (0.95), ``degradation_eur_per_mwh`` (60, the cost of cycling one MWh). Prices: upward
    (discharge) = degradation / eta_discharge plus the value of the lost stored energy
    (``energy_value_eur_per_mwh``, 40), downward (charge) = degradation; both jittered by
    +-10 % per unit (seeded) so the merit order has no ties.
    """

    alias = "battery"

    def __init__(self, unit_id: str, building_id: str, *, rng: np.random.Generator,
                 context: UnitContext | None = None, capacity_kwh: float = 10.0,
                 power_kw: float = 5.0, soc_init: float = 0.5, soc_min: float = 0.1,
                 soc_max: float = 0.95, eta_charge: float = 0.95, eta_discharge: float = 0.95,
                 degradation_eur_per_mwh: float = 60.0, energy_value_eur_per_mwh: float = 40.0,
                 **params: Any) -> None:
        super().__init__(unit_id, building_id, rng=rng, context=context, **params)
        if not 0.0 <= soc_min <= soc_init <= soc_max <= 1.0:
            raise ValueError(f"{unit_id}: need 0 <= soc_min <= soc_init <= soc_max <= 1")
        if (capacity_kwh <= 0 or power_kw < 0
                or not (0 < eta_charge <= 1 and 0 < eta_discharge <= 1)):
            raise ValueError(f"{unit_id}: capacity > 0, power >= 0, efficiencies in (0, 1]")
        self.capacity_kwh = float(capacity_kwh)
        self.power_kw = float(power_kw)
        self.soc = float(soc_init)
        self.soc_min, self.soc_max = float(soc_min), float(soc_max)
        self.eta_charge, self.eta_discharge = float(eta_charge), float(eta_discharge)
        jitter = rng.uniform(0.9, 1.1, size=2)
        self.price_up_eur_per_mwh = float(
            (degradation_eur_per_mwh / eta_discharge + energy_value_eur_per_mwh) * jitter[0])
        self.price_down_eur_per_mwh = float(degradation_eur_per_mwh * jitter[1])

    def baseline_mw(self, frame: Frame) -> float:
        return 0.0

    def feasible_range_mw(self, frame: Frame) -> tuple[float, float]:
        dt = frame.duration_h
        stored_kwh = max(0.0, (self.soc - self.soc_min) * self.capacity_kwh)
        headroom_kwh = max(0.0, (self.soc_max - self.soc) * self.capacity_kwh)
        up_kw = min(self.power_kw, stored_kwh * self.eta_discharge / dt)
        down_kw = min(self.power_kw, headroom_kwh / (self.eta_charge * dt))
        return -down_kw / 1000.0, up_kw / 1000.0

    def advance(self, frame: Frame, power_mw: float) -> None:
        p_kw = power_mw * 1000.0
        if p_kw >= 0:
            delta = -p_kw * frame.duration_h / self.eta_discharge
        else:
            delta = -p_kw * frame.duration_h * self.eta_charge
        self.soc = float(np.clip(self.soc + delta / self.capacity_kwh, self.soc_min, self.soc_max))

    def state(self) -> dict[str, float]:
        return {"soc": self.soc}
