"""The plug-in contract for flexibility-providing units (FPUs).

Sign convention: power is signed *injection* into the grid (MW): generation > 0,
consumption < 0. An activation is a signed deviation from the baseline: > 0 upward
(inject more / consume less), < 0 downward.

Life cycle of a unit in every frame (the mosaik wrapper and the market follow it)::

    unit.offers(frame)              # bids for the frame, from the current state
    unit.dispatch(frame, setpoint)  # optional: the cleared activation (sum of accepted bids)
    unit.power_mw(frame)            # baseline + applied activation
    unit.step(frame)                # advance the state over the frame

Every method gets the :class:`~flexcore.district.daytypes.Frame` it is about: ``index``
(position in the run's frame list), ``slot`` (position within its day, 0..95 at 15 min),
``day_type`` (one of the nine BDEW day types, e.g. ``"winter_workday"``), ``start`` (naive
CET start, ``pandas.Timestamp``), ``end``, ``duration_h`` (0.25 at 15 min) and
``timestamp`` (``start`` with its zone, UTC+01:00).

Contract (what a plug-in must provide):

``__init__(unit_id, building_id, *, rng, context=None, **params)``
    ``params`` come from the TOML ``params`` table; ``rng`` is a seeded
    ``numpy.random.Generator`` for any randomness; ``context`` a :class:`UnitContext`
    giving the building's data and per-frame profiles.
``baseline_mw(frame)`` (abstract)
    Power the unit would have in the frame without activation (may depend on the state).
``feasible_range_mw(frame)`` (abstract)
    ``(down_mw <= 0, up_mw >= 0)``: the activation range deliverable over the *whole*
    frame from the current state without leaving any limit, now or later.
``advance(frame, power_mw)`` (abstract)
    Update the state over the frame given the actual power.
``state()``
    Small dict of numbers for logging (default: empty).

The base class implements the rest of the contract from these:

- :meth:`offers`: at most one upward and one downward :class:`Offer` equal to the
  feasible range, priced ``price_up_eur_per_mwh`` / ``price_down_eur_per_mwh``
  (class or instance attributes, default 0: EUR per MWh of activated energy in that
  direction, so a downward activation ``x < 0`` costs ``price_down_eur_per_mwh * |x|``
  per hour; override :meth:`offers` for other bid shapes, but never offer more than
  :meth:`feasible_range_mw`).
- :meth:`dispatch`: **clipping policy**: a set-point outside the feasible range is
  clipped to it; the returned :class:`Dispatch` reports ``clipped=True`` and the reason.
  A non-finite set-point raises ``ValueError``. A later dispatch in the same frame
  replaces the earlier one.
- :meth:`power_mw` = ``baseline_mw + applied activation`` (activation 0 if not dispatched).
- :meth:`step`: calls :meth:`advance` with :meth:`power_mw` and forgets the activation.

Every frame the simulator checks the contract with :func:`contract_violation` (finite
numbers, ``down <= 0 <= up``); a unit that breaks it is *flagged and neutralised* for the
frame: it offers nothing and stays at its baseline (or its profile if the baseline is not
finite), and its id and the reason are recorded.

Grid accounting: :meth:`profile_mw` is the part of the baseline already contained in the
building's load/PV profile (0 for add-on devices such as batteries, EVs, heat pumps; the
PV feed-in for PV curtailment; the shiftable load for a flexible load). A building's
injection is its profile net injection plus ``sum(power_mw - profile_mw)`` over its units.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexcore.district.daytypes import Frame

MIN_OFFER_MW = 1e-6  # 1 W: smaller volumes are not offered
_TOL_MW = 1e-9


@dataclass(frozen=True)
class Offer:
    """A bid for one frame. ``volume_mw`` is signed (> 0 upward, < 0 downward)."""

    volume_mw: float
    price_eur_per_mwh: float
    min_mw: float = 0.0
    indivisible: bool = False

    @property
    def direction(self) -> str:
        return "up" if self.volume_mw > 0 else "down"


@dataclass(frozen=True)
class Dispatch:
    """Result of :meth:`FlexibilityUnit.dispatch` (MW, signed deviations from baseline)."""

    requested_mw: float
    applied_mw: float
    clipped: bool
    reason: str = ""


def _zero(frame: Frame) -> float:
    return 0.0


def _default_temperature(frame: Frame) -> float:
    from flexcore.district.weather import temperature_c

    return temperature_c(frame.start, frame.duration_h)


@dataclass(frozen=True)
class UnitContext:
    """What a unit may know about its building, as per-frame callables.

    ``load_mw(frame)``: building consumption (MW, >= 0, mean over the frame);
    ``pv_mw(frame)``: building PV generation (MW, >= 0); ``temperature_c(frame)``: outdoor
    temperature (degC, default: TRY weather); ``building``: the building's table row
    (``type``, ``floor_area_m2``, ``annual_kwh``, ``dwellings``, ...).
    """

    load_mw: Callable[[Frame], float] = _zero
    pv_mw: Callable[[Frame], float] = _zero
    temperature_c: Callable[[Frame], float] = _default_temperature
    building: Mapping[str, Any] = field(default_factory=dict)


class FlexibilityUnit(ABC):
    """Base class of all flexibility-providing units (see the module docstring)."""

    #: short name used in unit ids and as registry alias (override in subclasses)
    alias: str = "fpu"
    #: True: only assigned to buildings with PV (see flexcore.fpu.assign)
    requires_pv: bool = False
    #: price of the default upward offer (EUR per MWh of upward activation)
    price_up_eur_per_mwh: float = 0.0
    #: price of the default downward offer (EUR per MWh of |downward activation|)
    price_down_eur_per_mwh: float = 0.0

    def __init__(
        self,
        unit_id: str,
        building_id: str,
        *,
        rng: np.random.Generator,
        context: UnitContext | None = None,
        **params: Any,
    ) -> None:
        if params:
            raise TypeError(
                f"{type(self).__name__} {unit_id}: unknown parameter(s) {sorted(params)}")
        self.unit_id = str(unit_id)
        self.building_id = str(building_id)
        self.rng = rng
        self.context = context if context is not None else UnitContext()
        self._activation: tuple[Frame, float] | None = None

    # ----------------------------------------------------------- to implement
    @abstractmethod
    def baseline_mw(self, frame: Frame) -> float:
        """Signed injection without activation (MW)."""

    @abstractmethod
    def feasible_range_mw(self, frame: Frame) -> tuple[float, float]:
        """``(down <= 0, up >= 0)`` activation deliverable over the whole frame (MW)."""

    @abstractmethod
    def advance(self, frame: Frame, power_mw: float) -> None:
        """Update the state over ``frame`` at the actual signed power ``power_mw``."""

    def state(self) -> dict[str, float]:
        """Small dict of numbers for logging."""
        return {}

    def profile_mw(self, frame: Frame) -> float:
        """Part of the baseline already contained in the building profile (default 0)."""
        return 0.0

    # ------------------------------------------------------------ provided
    def offers(self, frame: Frame) -> list[Offer]:
        """At most one upward and one downward offer, equal to the feasible range."""
        down, up = self.feasible_range_mw(frame)
        out = []
        if up >= MIN_OFFER_MW:
            out.append(Offer(float(up), float(self.price_up_eur_per_mwh)))
        if down <= -MIN_OFFER_MW:
            out.append(Offer(float(down), float(self.price_down_eur_per_mwh)))
        return out

    def dispatch(self, frame: Frame, setpoint_mw: float) -> Dispatch:
        """Apply the cleared activation, clipped to the feasible range (reported)."""
        value = float(setpoint_mw)
        if not math.isfinite(value):
            raise ValueError(f"unit {self.unit_id}: set-point must be finite, got {setpoint_mw!r}")
        down, up = self.feasible_range_mw(frame)
        applied, reason = value, ""
        if value > up + _TOL_MW:
            applied, reason = up, f"above the upward limit {up:.6g} MW"
        elif value < down - _TOL_MW:
            applied, reason = down, f"below the downward limit {down:.6g} MW"
        else:
            applied = min(max(value, down), up)
        self._activation = (frame, applied)
        return Dispatch(value, applied, bool(reason), reason)

    def activation_mw(self, frame: Frame) -> float:
        """Applied activation in ``frame`` (0 if not dispatched)."""
        if self._activation is not None and self._activation[0] == frame:
            return self._activation[1]
        return 0.0

    def power_mw(self, frame: Frame) -> float:
        """Actual signed injection: baseline + applied activation (MW)."""
        return self.baseline_mw(frame) + self.activation_mw(frame)

    def step(self, frame: Frame) -> None:
        """Advance the state over the frame and forget the frame's activation."""
        self.advance(frame, self.power_mw(frame))
        self._activation = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.unit_id!r}, building={self.building_id!r})"


def contract_violation(unit: FlexibilityUnit, frame: Frame) -> str:
    """Why ``unit`` breaks the plug-in contract in ``frame`` ("" if it does not): the
    feasible range must be two finite numbers with ``down <= 0 <= up``, the baseline and
    the profile part finite numbers. Exceptions raised by the unit propagate."""
    values: dict[str, Any] = {"baseline_mw": unit.baseline_mw(frame),
                              "profile_mw": unit.profile_mw(frame)}
    rng = unit.feasible_range_mw(frame)
    try:
        down, up = rng
    except (TypeError, ValueError):
        return f"feasible_range_mw returned {rng!r}, not a (down, up) pair"
    return violation_reason(values["baseline_mw"], values["profile_mw"], down, up)


def violation_reason(baseline_mw: Any, profile_mw: Any, down: Any, up: Any) -> str:
    """:func:`contract_violation` from the values a unit returned ("" if they keep the
    contract)."""
    values: dict[str, Any] = {"baseline_mw": baseline_mw, "profile_mw": profile_mw,
                              "feasible_range_mw down": down, "feasible_range_mw up": up}
    for what, x in values.items():
        try:
            ok = math.isfinite(float(x))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return f"{what} is {x!r}, not a finite number"
    if not float(down) <= _TOL_MW or not float(up) >= -_TOL_MW:
        return f"feasible_range_mw returned ({float(down):.6g}, {float(up):.6g}): " \
               "needs down <= 0 <= up"
    return ""
