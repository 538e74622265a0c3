"""Home EV charger (wallbox) with one overnight charging session per day."""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any

import numpy as np
import pandas as pd

from flexcore.district.daytypes import Frame

from .base import FlexibilityUnit, UnitContext

_EPS = 1e-9


class EVCharger(FlexibilityUnit):
    """An EV plugged in from an evening arrival to a morning departure.

    Each calendar day ``d`` has one session ``[d + arrival, d+1 + departure)``; arrival
    ~ N(``arrival_mean_h`` 18, ``arrival_sd_h`` 1.5) clipped to 15-22 h, departure ~
    N(``departure_mean_h`` 7.5, ``departure_sd_h`` 1) clipped to 5-9.5 h, both on the
    15-min grid, and the energy needed by departure ~ U(``energy_min_kwh`` 4,
    ``energy_max_kwh`` 20). They are drawn from a generator seeded by (a number drawn
    from ``rng`` at construction, date), so they do not depend on the order of frames.
    The car is plugged during a frame only if the whole frame lies inside the session.
    On arrival the battery holds ``target_soc * capacity_kwh - need`` (energy at the plug,
    losses ignored); the need is capped to what ``power_kw`` can deliver before departure.

    Baseline: charge immediately at ``power_kw`` (11 kW) until the need is met.
    Upward offer (charge less now): only as far as the remaining need can still be
    delivered at full power in the whole frames left before departure; downward offer
    (charge more): up to ``power_kw`` while the battery is not full. So the need is always
    delivered by departure. Prices ``price_up_eur_per_mwh`` (35) and
    ``price_down_eur_per_mwh`` (15), jittered +-10 % per unit.
    """

    alias = "ev"

    def __init__(self, unit_id: str, building_id: str, *, rng: np.random.Generator,
                 context: UnitContext | None = None, power_kw: float = 11.0,
                 capacity_kwh: float = 60.0, target_soc: float = 0.8,
                 arrival_mean_h: float = 18.0, arrival_sd_h: float = 1.5,
                 departure_mean_h: float = 7.5, departure_sd_h: float = 1.0,
                 energy_min_kwh: float = 4.0, energy_max_kwh: float = 20.0,
                 price_up_eur_per_mwh: float = 35.0, price_down_eur_per_mwh: float = 15.0,
                 **params: Any) -> None:
        super().__init__(unit_id, building_id, rng=rng, context=context, **params)
        if power_kw <= 0 or capacity_kwh <= 0 or not 0 < target_soc <= 1:
            raise ValueError(f"{unit_id}: power_kw > 0, capacity_kwh > 0, 0 < target_soc <= 1")
        if not 0 <= energy_min_kwh <= energy_max_kwh:
            raise ValueError(f"{unit_id}: need 0 <= energy_min_kwh <= energy_max_kwh")
        self.power_kw = float(power_kw)
        self.capacity_kwh = float(capacity_kwh)
        self.target_kwh = float(target_soc * capacity_kwh)
        self._times = (arrival_mean_h, arrival_sd_h, departure_mean_h, departure_sd_h)
        self._energy = (float(energy_min_kwh), float(min(energy_max_kwh, self.target_kwh)))
        self._seed = int(rng.integers(2**31))
        jitter = rng.uniform(0.9, 1.1, size=2)
        self.price_up_eur_per_mwh = float(price_up_eur_per_mwh * jitter[0])
        self.price_down_eur_per_mwh = float(price_down_eur_per_mwh * jitter[1])
        self._session: _dt.date | None = None
        self._windows: dict[_dt.date, tuple[pd.Timestamp, pd.Timestamp, float]] = {}
        self.soc_kwh = self.target_kwh
        self.remaining_kwh = 0.0

    # ---------------------------------------------------------------- sessions
    def session_window(self, date: _dt.date) -> tuple[pd.Timestamp, pd.Timestamp, float]:
        """(arrival, departure, energy needed in kWh) of the session starting on ``date``."""
        if date in self._windows:
            return self._windows[date]
        g = np.random.default_rng([self._seed, date.toordinal()])
        am, asd, dm, dsd = self._times
        arr = float(np.clip(g.normal(am, asd), 15.0, 22.0))
        dep = float(np.clip(g.normal(dm, dsd), 5.0, 9.5))
        need = float(g.uniform(*self._energy))
        day = pd.Timestamp(date)
        window = (day + pd.Timedelta(minutes=15 * round(arr * 4)),
                  day + pd.Timedelta(days=1, minutes=15 * round(dep * 4)), need)
        self._windows[date] = window
        return window

    def _plugged(self, frame: Frame) -> tuple[_dt.date, pd.Timestamp, float] | None:
        start = pd.Timestamp(frame.start)
        for date in (start.date(), start.date() - _dt.timedelta(days=1)):
            arr, dep, need = self.session_window(date)
            if arr <= start and frame.end <= dep:
                return date, dep, need
        return None

    def _frames_left(self, frame: Frame, departure: pd.Timestamp) -> int:
        hours = (departure - pd.Timestamp(frame.start)) / pd.Timedelta(hours=1)
        return int(math.floor(hours / frame.duration_h + _EPS))

    def _sync(self, frame: Frame) -> pd.Timestamp | None:
        """Start a new session if the frame belongs to one not yet seen; return departure."""
        found = self._plugged(frame)
        if found is None:
            return None
        date, dep, need = found
        if date != self._session:
            deliverable = self.power_kw * self._frames_left(frame, dep) * frame.duration_h
            need = min(need, deliverable)
            self._session = date
            self.remaining_kwh = need
            self.soc_kwh = self.target_kwh - need
        return dep

    # ---------------------------------------------------------------- contract
    def _baseline_kw(self, frame: Frame) -> float:
        return min(self.power_kw, self.remaining_kwh / frame.duration_h)

    def baseline_mw(self, frame: Frame) -> float:
        if self._sync(frame) is None:
            return 0.0
        return -self._baseline_kw(frame) / 1000.0

    def feasible_range_mw(self, frame: Frame) -> tuple[float, float]:
        dep = self._sync(frame)
        if dep is None:
            return 0.0, 0.0
        dt = frame.duration_h
        base = self._baseline_kw(frame)
        later_kwh = self.power_kw * max(0, self._frames_left(frame, dep) - 1) * dt
        c_min = min(base, max(0.0, (self.remaining_kwh - later_kwh) / dt))
        c_max = max(base, min(self.power_kw, (self.capacity_kwh - self.soc_kwh) / dt))
        return -(c_max - base) / 1000.0, (base - c_min) / 1000.0

    def advance(self, frame: Frame, power_mw: float) -> None:
        if self._sync(frame) is None:
            return
        energy = max(0.0, -power_mw * 1000.0) * frame.duration_h
        self.soc_kwh = min(self.capacity_kwh, self.soc_kwh + energy)
        self.remaining_kwh = max(0.0, self.remaining_kwh - energy)
        if self.remaining_kwh < 1e-9:
            self.remaining_kwh = 0.0

    def state(self) -> dict[str, float]:
        return {"soc": self.soc_kwh / self.capacity_kwh, "remaining_kwh": self.remaining_kwh,
                "plugged": float(self._session is not None)}
