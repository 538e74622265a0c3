"""Air/water heat pump heating a building modelled as one thermal mass (1R1C)."""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from flexcore.district.daytypes import Frame

from .base import FlexibilityUnit, UnitContext

DESIGN_TEMPERATURE_C = -12.0   # DIN EN 12831 design temperature, Karlsruhe region


@functools.lru_cache(maxsize=1)
def _cop_table() -> tuple[np.ndarray, np.ndarray]:
    """COP of hplib's generic regulated air/water heat pump over outdoor temperature.

    Flow temperature from a heating curve: 45 degC at -12 degC outdoors, 30 degC at
    +15 degC and above (linear in between); hplib's input ``t_in_secondary`` is the
    return temperature, taken as flow - 5 K. COP clipped to [1.5, 6].
    """
    import hplib.hplib as hpl

    t_out = np.arange(-25.0, 40.5, 0.5)
    flow = np.clip(45.0 - (t_out - DESIGN_TEMPERATURE_C) * 15.0 / 27.0, 30.0, 45.0)
    params = hpl.get_parameters("Generic", group_id=1, t_in=-7, t_out=35, p_th=8000)
    res = hpl.HeatPump(params).simulate(t_in_primary=t_out, t_in_secondary=flow - 5.0, t_amb=t_out)
    cop = np.clip(np.asarray(res["COP"], dtype=float), 1.5, 6.0)
    return t_out, cop


def cop_at(t_out_c: float) -> float:
    """Coefficient of performance at an outdoor temperature (interpolated hplib table)."""
    t, cop = _cop_table()
    return float(np.interp(t_out_c, t, cop))


class HeatPump(FlexibilityUnit):
    """Modulating heat pump with a thermostat, in a building with thermal mass.

    Building: ``C dT/dt = Q - H (T - T_out - gains_k)``, heat-loss coefficient
    ``H = specific_heat_load_w_m2 * floor_area_m2 / (t_set - (-12))`` (50 W/m2 at the
    design temperature -12 degC), time constant ``tau_h`` (50 h, C = H * tau); internal
    and solar gains as ``gains_k`` (6 K: no heating above ~15 degC). ``floor_area_m2``
    defaults to the building's (``context.building``), else 140 m2. The heat pump
    modulates its electric power in ``[0, p_el_max_kw]`` (default: 1.2 x design heat load /
    COP at -12 degC); heat = COP(T_out) x electric power (COP from hplib, see
    :func:`cop_at`). Outdoor temperature from ``context.temperature_c``.

    Baseline (thermostat): the power that brings the indoor temperature to ``t_set`` (21)
    at the end of the frame, within the power limits. Offers: upward (less power) down to
    the power that still ends the frame at >= ``t_min`` (20), downward (more power) up to
    the power that ends it at <= ``t_max`` (23). The temperature path over a frame is
    monotone (exponential), so the comfort band holds during the whole frame; activations
    never push the temperature further out of the band than the baseline would. Prices
    ``price_up_eur_per_mwh`` (50), ``price_down_eur_per_mwh`` (25), jittered +-10 %.
    """

    alias = "heat_pump"

    def __init__(self, unit_id: str, building_id: str, *, rng: np.random.Generator,
                 context: UnitContext | None = None, floor_area_m2: float | None = None,
                 specific_heat_load_w_m2: float = 50.0, tau_h: float = 50.0,
                 gains_k: float = 6.0, t_set: float = 21.0, t_min: float = 20.0,
                 t_max: float = 23.0, t_init: float | None = None,
                 p_el_max_kw: float | None = None, price_up_eur_per_mwh: float = 50.0,
                 price_down_eur_per_mwh: float = 25.0, **params: Any) -> None:
        super().__init__(unit_id, building_id, rng=rng, context=context, **params)
        if not t_min <= t_set <= t_max:
            raise ValueError(f"{unit_id}: need t_min <= t_set <= t_max")
        area = floor_area_m2 if floor_area_m2 is not None else self.context.building.get(
            "floor_area_m2", 140.0)
        self.h_kw_per_k = (specific_heat_load_w_m2 * float(area)
                           / (t_set - DESIGN_TEMPERATURE_C) / 1000.0)
        self.tau_h = float(tau_h)
        self.gains_k = float(gains_k)
        self.t_set, self.t_min, self.t_max = float(t_set), float(t_min), float(t_max)
        design_kw = self.h_kw_per_k * (t_set - DESIGN_TEMPERATURE_C - gains_k)
        self.p_el_max_kw = float(p_el_max_kw if p_el_max_kw is not None
                                 else 1.2 * design_kw / cop_at(DESIGN_TEMPERATURE_C))
        self.t_in = float(t_set if t_init is None else t_init)
        jitter = rng.uniform(0.9, 1.1, size=2)
        self.price_up_eur_per_mwh = float(price_up_eur_per_mwh * jitter[0])
        self.price_down_eur_per_mwh = float(price_down_eur_per_mwh * jitter[1])

    # ----------------------------------------------------------------- physics
    def _conditions(self, frame: Frame) -> tuple[float, float, float]:
        t_out = float(self.context.temperature_c(frame))
        a = math.exp(-frame.duration_h / self.tau_h)
        return t_out, cop_at(t_out), a

    def _end_temperature(self, p_el_kw: float, t_out: float, cop: float, a: float) -> float:
        t_eq = t_out + self.gains_k + cop * p_el_kw / self.h_kw_per_k
        return t_eq + (self.t_in - t_eq) * a

    def _power_for(self, target: float, t_out: float, cop: float, a: float) -> float:
        t_eq = (target - self.t_in * a) / (1.0 - a)
        return (t_eq - t_out - self.gains_k) * self.h_kw_per_k / cop

    def _baseline_kw(self, frame: Frame) -> float:
        t_out, cop, a = self._conditions(frame)
        return min(self.p_el_max_kw, max(0.0, self._power_for(self.t_set, t_out, cop, a)))

    # ---------------------------------------------------------------- contract
    def baseline_mw(self, frame: Frame) -> float:
        return -self._baseline_kw(frame) / 1000.0

    def feasible_range_mw(self, frame: Frame) -> tuple[float, float]:
        t_out, cop, a = self._conditions(frame)
        base = self._baseline_kw(frame)
        t_base = self._end_temperature(base, t_out, cop, a)
        low = max(0.0, self._power_for(min(self.t_min, t_base), t_out, cop, a))
        high = min(self.p_el_max_kw, self._power_for(max(self.t_max, t_base), t_out, cop, a))
        low, high = min(low, base), max(high, base)
        return -(high - base) / 1000.0, (base - low) / 1000.0

    def advance(self, frame: Frame, power_mw: float) -> None:
        t_out, cop, a = self._conditions(frame)
        self.t_in = self._end_temperature(max(0.0, -power_mw * 1000.0), t_out, cop, a)

    def state(self) -> dict[str, float]:
        return {"t_in_c": self.t_in}
