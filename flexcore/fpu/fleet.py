"""The default unit classes run as arrays: one :class:`ArrayGroup` per class of a fleet.

The unit classes (:mod:`flexcore.fpu.battery`, ``ev``, ``heatpump``, ``flexload``, ``pv``)
stay the model and the API: a researcher reads, subclasses or replaces them, and every
other class runs object by object. For a fleet of hundreds of default units the simulator
(``simulators.fpu_sim``) asks :func:`array_groups` for groups that evaluate the same
formulas on numpy arrays, operation for operation (the same bits as the unit methods: the
same IEEE operations in the same order, scalars such as ``exp`` and the COP computed as the
classes do; where the classes take Python's ``max``/``min``, :func:`_max`/:func:`_min`
keep their answer for NaN and signed zeros). The unit objects stay the truth for the
state: a group reads the units' state (:meth:`ArrayGroup.pull`) before it evaluates a
frame and writes it back after it advanced them (:meth:`ArrayGroup.push`), so ``unit.soc``
and ``unit.state()`` are always current. Parameters (sizes, efficiencies, prices) are read
once, when the group is built for a fleet (at the start of each day type).

A unit is run by a group only if its class is exactly one of the default classes (a
subclass may override any method) and its context is the district's: load and PV from the
district's :class:`~flexcore.district.profiles.BuildingProfiles` (as
:func:`flexcore.fpu.assign.building_context` builds it) and the default temperature.
"""
from __future__ import annotations

import datetime as _dt
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from flexcore.district.daytypes import Frame

from .base import FlexibilityUnit, _default_temperature
from .battery import HomeBattery
from .ev import _EPS as EV_EPS
from .ev import EVCharger
from .flexload import FlexibleLoad
from .heatpump import HeatPump, cop_at
from .pv import PVCurtailment

_HOUR_NS = 3_600_000_000_000


def _max(a: Any, b: Any) -> np.ndarray:
    """Python's ``max(a, b)`` elementwise: ``a`` unless ``b > a`` (so NaN and signed zeros
    come out as from the unit classes, unlike ``np.maximum``)."""
    return np.where(b > a, b, a)


def _min(a: Any, b: Any) -> np.ndarray:
    """Python's ``min(a, b)`` elementwise: ``a`` unless ``b < a``."""
    return np.where(b < a, b, a)


def profile_source(fn: Any) -> tuple[Any, str] | None:
    """``(profiles, building_id)`` if ``fn`` is ``partial(profiles.load_mw or pv_mw,
    building_id)`` of a BuildingProfiles (the district context), else None."""
    from flexcore.district.profiles import BuildingProfiles

    if not isinstance(fn, functools.partial) or fn.keywords or len(fn.args) != 1:
        return None
    method = fn.func
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, BuildingProfiles) or getattr(method, "__func__", None) not in (
            BuildingProfiles.load_mw, BuildingProfiles.pv_mw):
        return None
    return owner, str(fn.args[0])


class ArrayGroup:
    """The units of one default class as arrays (subclasses: one per class).

    ``evaluate(frame)`` -> ``(baseline_mw, profile_mw, down_mw, up_mw)`` arrays, the values
    of ``baseline_mw``, ``profile_mw`` and ``feasible_range_mw`` of each unit;
    ``advance(frame, power_mw)`` the units' ``advance``; ``state()`` the columns of the
    units' ``state()``; ``pull``/``push`` read/write the units' state attributes."""

    cls: type[FlexibilityUnit]
    #: state attributes read and written (numbers)
    fields: tuple[str, ...] = ()

    def __init__(self, units: Sequence[FlexibilityUnit], profiles: Any = None) -> None:
        self.units = list(units)
        self.profiles = profiles
        if profiles is not None:
            self.bidx = np.array([profiles.index_of(u.building_id) for u in self.units], int)
        self.price_up = np.array([float(u.price_up_eur_per_mwh) for u in self.units])
        self.price_down = np.array([float(u.price_down_eur_per_mwh) for u in self.units])
        self._params()
        self.pull()

    def _params(self) -> None:
        """Read the fixed parameters."""

    def _attr(self, name: str) -> np.ndarray:
        return np.array([float(getattr(u, name)) for u in self.units])

    def pull(self) -> None:
        for name in self.fields:
            setattr(self, name, self._attr(name))

    def push(self) -> None:
        for name in self.fields:
            for u, x in zip(self.units, getattr(self, name).tolist()):
                setattr(u, name, x)

    @classmethod
    def accepts(cls, unit: FlexibilityUnit) -> bool:
        return type(unit) is cls.cls

    def _means_mw(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """(load MW, PV MW) of the units' buildings, as ``profiles.load_mw``/``pv_mw``."""
        load_kw, pv_kw = self.profiles.frame_means_kw(frame)
        return load_kw[self.bidx] / 1000.0, pv_kw[self.bidx] / 1000.0

    def evaluate(self, frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def advance(self, frame: Frame, power_mw: np.ndarray) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _uses_profiles(unit: FlexibilityUnit, *names: str) -> Any:
    """The BuildingProfiles behind the unit's context callables ``names`` (all the same
    object and the unit's own building), else None."""
    found = [profile_source(getattr(unit.context, n)) for n in names]
    if any(f is None or f[1] != unit.building_id for f in found):
        return None
    owners = {id(f[0]) for f in found}
    return found[0][0] if len(owners) == 1 else None


class BatteryGroup(ArrayGroup):
    cls = HomeBattery
    fields = ("soc",)

    def _params(self) -> None:
        for name in ("capacity_kwh", "power_kw", "soc_min", "soc_max", "eta_charge",
                     "eta_discharge"):
            setattr(self, name, self._attr(name))

    def evaluate(self, frame):
        dt = frame.duration_h
        zero = np.zeros(len(self.units))
        stored = _max(0.0, (self.soc - self.soc_min) * self.capacity_kwh)
        headroom = _max(0.0, (self.soc_max - self.soc) * self.capacity_kwh)
        up_kw = _min(self.power_kw, stored * self.eta_discharge / dt)
        down_kw = _min(self.power_kw, headroom / (self.eta_charge * dt))
        return zero, zero.copy(), -down_kw / 1000.0, up_kw / 1000.0

    def advance(self, frame, power_mw):
        p_kw = power_mw * 1000.0
        delta = np.where(p_kw >= 0, -p_kw * frame.duration_h / self.eta_discharge,
                         -p_kw * frame.duration_h * self.eta_charge)
        self.soc = np.clip(self.soc + delta / self.capacity_kwh, self.soc_min, self.soc_max)

    def state(self):
        return {"soc": self.soc}


class PVGroup(ArrayGroup):
    cls = PVCurtailment
    fields = ("curtailed_mwh",)

    @classmethod
    def accepts(cls, unit):
        return type(unit) is cls.cls and _uses_profiles(unit, "pv_mw") is not None

    def evaluate(self, frame):
        base = _max(0.0, self._means_mw(frame)[1])
        return base, base.copy(), -base, np.zeros(len(self.units))

    def advance(self, frame, power_mw):
        base = self.evaluate(frame)[0]
        self.curtailed_mwh = self.curtailed_mwh + (base - power_mw) * frame.duration_h

    def state(self):
        return {"curtailed_mwh": self.curtailed_mwh}


class FlexLoadGroup(ArrayGroup):
    cls = FlexibleLoad
    fields = ("backlog_kwh",)

    @classmethod
    def accepts(cls, unit):
        return type(unit) is cls.cls and _uses_profiles(unit, "load_mw") is not None

    def _params(self) -> None:
        for name in ("share", "max_backlog_kwh", "payback_h", "extra_kw"):
            setattr(self, name, self._attr(name))

    def _flex_kw(self, frame):
        return self.share * _max(0.0, self._means_mw(frame)[0]) * 1000.0

    def _limits_kw(self, frame):
        dt = frame.duration_h
        flex = self._flex_kw(frame)
        c_max = flex + self.extra_kw
        base = _min(c_max, _max(0.0, flex + self.backlog_kwh / self.payback_h))
        low = _max(0.0, flex - (self.max_backlog_kwh - self.backlog_kwh) / dt)
        high = _min(c_max, flex + (self.backlog_kwh + self.max_backlog_kwh) / dt)
        return _min(low, base), base, _max(high, base), flex

    def evaluate(self, frame):
        low, base, high, flex = self._limits_kw(frame)
        return -base / 1000.0, -flex / 1000.0, -(high - base) / 1000.0, (base - low) / 1000.0

    def advance(self, frame, power_mw):
        consumed = _max(0.0, -power_mw * 1000.0)
        backlog = self.backlog_kwh + (self._flex_kw(frame) - consumed) * frame.duration_h
        self.backlog_kwh = np.clip(backlog, -self.max_backlog_kwh, self.max_backlog_kwh)

    def state(self):
        return {"backlog_kwh": self.backlog_kwh}


class HeatPumpGroup(ArrayGroup):
    cls = HeatPump
    fields = ("t_in",)

    @classmethod
    def accepts(cls, unit):
        return type(unit) is cls.cls and unit.context.temperature_c is _default_temperature

    def _params(self) -> None:
        for name in ("h_kw_per_k", "tau_h", "gains_k", "t_set", "t_min", "t_max",
                     "p_el_max_kw"):
            setattr(self, name, self._attr(name))
        self._cond: tuple[Any, tuple[float, float, np.ndarray]] | None = None

    def _conditions(self, frame):
        key = (frame.start, frame.duration_h)
        if self._cond is None or self._cond[0] != key:
            t_out = float(_default_temperature(frame))
            a = np.array([math.exp(-frame.duration_h / tau) for tau in self.tau_h.tolist()])
            self._cond = (key, (t_out, cop_at(t_out), a))
        return self._cond[1]

    def _end_temperature(self, p_el_kw, t_out, cop, a):
        t_eq = t_out + self.gains_k + cop * p_el_kw / self.h_kw_per_k
        return t_eq + (self.t_in - t_eq) * a

    def _power_for(self, target, t_out, cop, a):
        t_eq = (target - self.t_in * a) / (1.0 - a)
        return (t_eq - t_out - self.gains_k) * self.h_kw_per_k / cop

    def _baseline_kw(self, t_out, cop, a):
        return _min(self.p_el_max_kw, _max(0.0, self._power_for(self.t_set, t_out, cop, a)))

    def evaluate(self, frame):
        t_out, cop, a = self._conditions(frame)
        base = self._baseline_kw(t_out, cop, a)
        t_base = self._end_temperature(base, t_out, cop, a)
        low = _max(0.0, self._power_for(_min(self.t_min, t_base), t_out, cop, a))
        high = _min(self.p_el_max_kw, self._power_for(_max(self.t_max, t_base), t_out, cop, a))
        low, high = _min(low, base), _max(high, base)
        return (-base / 1000.0, np.zeros(len(self.units)), -(high - base) / 1000.0,
                (base - low) / 1000.0)

    def advance(self, frame, power_mw):
        t_out, cop, a = self._conditions(frame)
        self.t_in = self._end_temperature(_max(0.0, -power_mw * 1000.0), t_out, cop, a)

    def state(self):
        return {"t_in_c": self.t_in}


class EVGroup(ArrayGroup):
    """EV chargers: sessions as arrays of nanosecond times per date (from each unit's own
    :meth:`~flexcore.fpu.ev.EVCharger.session_window`)."""

    cls = EVCharger
    fields = ("soc_kwh", "remaining_kwh")
    _WINDOWS_KEPT = 64

    def _params(self) -> None:
        for name in ("power_kw", "capacity_kwh", "target_kwh"):
            setattr(self, name, self._attr(name))
        self._windows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def pull(self) -> None:
        super().pull()
        self.session = np.array([-1 if u._session is None else u._session.toordinal()
                                 for u in self.units], np.int64)

    def push(self) -> None:
        super().push()
        for u, s in zip(self.units, self.session.tolist()):
            date = None if s < 0 else _dt.date.fromordinal(s)
            if u._session != date:
                u._session = date

    def _day(self, ordinal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(arrival ns, departure ns, need kWh) of the sessions starting on a date."""
        hit = self._windows.get(ordinal)
        if hit is None:
            date = _dt.date.fromordinal(ordinal)
            w = [u.session_window(date) for u in self.units]
            hit = (np.array([a.value for a, _, _ in w], np.int64),
                   np.array([d.value for _, d, _ in w], np.int64),
                   np.array([n for _, _, n in w], float))
            if len(self._windows) >= self._WINDOWS_KEPT:
                self._windows.clear()
            self._windows[ordinal] = hit
        return hit

    def _sync(self, frame):
        """EVCharger._sync for all units: (plugged mask, departure ns)."""
        start = pd.Timestamp(frame.start)
        start_ns, end_ns = start.value, pd.Timestamp(frame.end).value
        d0 = start.date().toordinal()
        arr0, dep0, need0 = self._day(d0)
        arr1, dep1, need1 = self._day(d0 - 1)
        in0 = (arr0 <= start_ns) & (end_ns <= dep0)
        in1 = ~in0 & (arr1 <= start_ns) & (end_ns <= dep1)
        plugged = in0 | in1
        date = np.where(in0, d0, d0 - 1)
        dep = np.where(in0, dep0, dep1)
        need = np.where(in0, need0, need1)
        new = plugged & (date != self.session)
        if new.any():
            left = self._frames_left(frame, start_ns, dep)
            deliverable = self.power_kw * left * frame.duration_h
            need = _min(need, deliverable)
            self.session = np.where(new, date, self.session)
            self.remaining_kwh = np.where(new, need, self.remaining_kwh)
            self.soc_kwh = np.where(new, self.target_kwh - need, self.soc_kwh)
        return plugged, dep

    @staticmethod
    def _frames_left(frame, start_ns, dep_ns):
        hours = (dep_ns - start_ns) / float(_HOUR_NS)
        return np.floor(hours / frame.duration_h + EV_EPS).astype(np.int64)

    def evaluate(self, frame):
        plugged, dep = self._sync(frame)
        dt = frame.duration_h
        base = _min(self.power_kw, self.remaining_kwh / dt)
        left = self._frames_left(frame, pd.Timestamp(frame.start).value, dep)
        later = self.power_kw * _max(0, left - 1) * dt
        c_min = _min(base, _max(0.0, (self.remaining_kwh - later) / dt))
        c_max = _max(base, _min(self.power_kw, (self.capacity_kwh - self.soc_kwh) / dt))
        zero = np.zeros(len(self.units))
        return (np.where(plugged, -base / 1000.0, zero), zero.copy(),
                np.where(plugged, -(c_max - base) / 1000.0, zero),
                np.where(plugged, (base - c_min) / 1000.0, zero))

    def advance(self, frame, power_mw):
        plugged, _ = self._sync(frame)
        energy = _max(0.0, -power_mw * 1000.0) * frame.duration_h
        soc = _min(self.capacity_kwh, self.soc_kwh + energy)
        remaining = _max(0.0, self.remaining_kwh - energy)
        remaining = np.where(remaining < 1e-9, 0.0, remaining)
        self.soc_kwh = np.where(plugged, soc, self.soc_kwh)
        self.remaining_kwh = np.where(plugged, remaining, self.remaining_kwh)

    def state(self):
        return {"soc": self.soc_kwh / self.capacity_kwh, "remaining_kwh": self.remaining_kwh,
                "plugged": (self.session >= 0).astype(float)}


#: the groups, by the class they run
GROUPS: tuple[type[ArrayGroup], ...] = (BatteryGroup, EVGroup, HeatPumpGroup, FlexLoadGroup,
                                        PVGroup)


def array_groups(units: Sequence[FlexibilityUnit], profiles: Any = None
                 ) -> list[tuple[ArrayGroup, np.ndarray]]:
    """Groups for the units a group can run: ``[(group, positions in units)]`` (the other
    units are run object by object). ``profiles``: the district's BuildingProfiles (units
    whose context reads other profiles are left to their objects)."""
    out = []
    for group in GROUPS:
        pos = [k for k, u in enumerate(units) if group.accepts(u)]
        if group in (PVGroup, FlexLoadGroup):
            name = "pv_mw" if group is PVGroup else "load_mw"
            pos = [k for k in pos if _uses_profiles(units[k], name) is profiles
                   and profiles is not None]
        if pos:
            out.append((group([units[k] for k in pos], profiles), np.array(pos, int)))
    return out


__all__ = ["GROUPS", "ArrayGroup", "array_groups", "profile_source"]
