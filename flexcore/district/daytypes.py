"""BDEW day types and simulation time frames.

The BDEW standard load profiles distinguish nine day types: three seasons (winter
01.11.-20.03., summer 15.05.-14.09., transition otherwise) times workday / Saturday /
Sunday-or-public-holiday. Each day type is represented by one date of the reference year
2010, the year of the DWD test reference year (TRY 2010) that drives the weather, so load,
PV and temperature belong to the same calendar day. The dates avoid public holidays and
the edges of the seasons (a Wednesday stands for all workdays).

All timestamps are naive and in CET (UTC+1, no daylight saving time), as in the BDEW
profiles and the TRY data.

Calendar runs (real dates: ``make_frames(start=..., end=...)``, :func:`calendar_frame`):
each date gets the day type of :func:`day_type_of`. Sundays and the German national public
holidays (the ``holidays`` package, ``country_holidays("DE")`` without a state: New Year,
Good Friday, Easter Monday, 1 May, Ascension, Whit Monday, 3 October, 25 and 26 December,
and one-off national days such as 31 October 2017) count as Sunday; 24 and 31 December
count as Saturday (the BDEW rule for Christmas Eve and New Year's Eve) unless they fall on
a Sunday; other Saturdays as Saturday, all other days as workdays. The profile data stay
those of the reference year: a calendar frame's load comes from the nearest date of
:data:`REFERENCE_YEAR` with the same day type (:func:`reference_date`, usually within three
days, wrapping around the year) and its weather and PV from the same month and day of the
test reference year (29 February uses 28 February); ``Frame.load_start`` /
``Frame.weather_start`` say which.
"""
from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

REFERENCE_YEAR = 2010
SEASONS = ("winter", "summer", "transition")
DAY_KINDS = ("workday", "saturday", "sunday")
DAY_TYPES: tuple[str, ...] = tuple(f"{s}_{k}" for s in SEASONS for k in DAY_KINDS)
"""The nine BDEW day types, e.g. ``"winter_workday"``, ``"summer_sunday"``."""

REPRESENTATIVE_DATES: dict[str, _dt.date] = {
    "winter_workday": _dt.date(2010, 1, 20),      # Wednesday
    "winter_saturday": _dt.date(2010, 1, 23),
    "winter_sunday": _dt.date(2010, 1, 24),
    "summer_workday": _dt.date(2010, 7, 21),      # Wednesday
    "summer_saturday": _dt.date(2010, 7, 24),
    "summer_sunday": _dt.date(2010, 7, 25),
    "transition_workday": _dt.date(2010, 4, 21),  # Wednesday
    "transition_saturday": _dt.date(2010, 4, 24),
    "transition_sunday": _dt.date(2010, 4, 25),
}
"""Representative date of each day type in :data:`REFERENCE_YEAR`."""

ALLOWED_RESOLUTIONS_MIN = (15, 60)


@dataclass(frozen=True)
class Frame:
    """One time frame of the simulation (a market period).

    ``index`` is the position in the list returned by :func:`make_frames` (running over
    all selected days), ``slot`` the position within its day (0..95 for 15 min),
    ``start`` the naive CET start timestamp, ``duration_h`` the length in hours and
    ``day_type`` one of :data:`DAY_TYPES`.
    """

    index: int
    start: pd.Timestamp
    duration_h: float
    day_type: str
    slot: int = 0
    load_ref: pd.Timestamp | None = None     # calendar frames: see load_start
    weather_ref: pd.Timestamp | None = None  # calendar frames: see weather_start

    @property
    def load_start(self) -> pd.Timestamp:
        """Where the frame's load profile is read: ``start`` itself for a representative
        day, the same time on :func:`reference_date` for a calendar date."""
        return self.start if self.load_ref is None else self.load_ref

    @property
    def weather_start(self) -> pd.Timestamp:
        """Where the frame's weather and PV are read: ``start`` for a representative day,
        the same month, day and time of :data:`REFERENCE_YEAR` for a calendar date."""
        return self.start if self.weather_ref is None else self.weather_ref

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(hours=self.duration_h)

    @property
    def timestamp(self) -> pd.Timestamp:
        """``start`` with its fixed zone, CET = UTC+01:00 (see flexcore.district.clock)."""
        return self.start.tz_localize("Etc/GMT-1")


def easter_sunday(year: int) -> _dt.date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return _dt.date(year, month, day + 1)


def holidays_bw(year: int) -> list[_dt.date]:
    """Public holidays in Baden-Wuerttemberg (treated as Sundays by BDEW)."""
    easter = easter_sunday(year)
    fixed = [(1, 1), (1, 6), (5, 1), (10, 3), (11, 1), (12, 25), (12, 26)]
    # Good Friday, Easter Monday, Ascension, Whit Monday, Corpus Christi
    moving = [-2, 1, 39, 50, 60]
    days = [_dt.date(year, m, d) for m, d in fixed]
    days += [easter + _dt.timedelta(days=k) for k in moving]
    return sorted(days)


@functools.lru_cache(maxsize=256)
def public_holidays(year: int) -> dict[_dt.date, str]:
    """German national public holidays of a year (``holidays`` package, no state)."""
    import holidays

    return dict(holidays.country_holidays("DE", years=int(year)))


#: (month, day) counted as Saturday unless a Sunday or public holiday (BDEW)
SATURDAY_DATES = ((12, 24), (12, 31))


def season_of(date: _dt.date) -> str:
    """BDEW season of a date."""
    md = (date.month, date.day)
    if md >= (11, 1) or md <= (3, 20):
        return "winter"
    if (5, 15) <= md <= (9, 14):
        return "summer"
    return "transition"


def day_type_of(date: _dt.date) -> str:
    """BDEW day type of a calendar date: Sundays and German national public holidays as
    Sunday, 24 and 31 December and Saturdays as Saturday (see the module doc)."""
    if date.weekday() == 6 or date in public_holidays(date.year):
        kind = "sunday"
    elif date.weekday() == 5 or (date.month, date.day) in SATURDAY_DATES:
        kind = "saturday"
    else:
        kind = "workday"
    return f"{season_of(date)}_{kind}"


def _data_day_type(date: _dt.date) -> str:
    """The day type the reference-year profile data have at ``date`` (made by demandlib
    with the Baden-Wuerttemberg holidays of :func:`holidays_bw` as Sundays)."""
    if date in set(holidays_bw(date.year)) or date.weekday() == 6:
        kind = "sunday"
    elif date.weekday() == 5:
        kind = "saturday"
    else:
        kind = "workday"
    return f"{season_of(date)}_{kind}"


def same_day_in_reference_year(date: _dt.date) -> _dt.date:
    """The same month and day in :data:`REFERENCE_YEAR` (29 February -> 28 February)."""
    if (date.month, date.day) == (2, 29):
        return _dt.date(REFERENCE_YEAR, 2, 28)
    return date.replace(year=REFERENCE_YEAR)


@functools.lru_cache(maxsize=4096)
def reference_date(date: _dt.date, day_type: str | None = None) -> _dt.date:
    """The date of :data:`REFERENCE_YEAR` nearest to ``date``'s month and day (wrapping
    around the year, earlier first on a tie) whose profile data have ``day_type`` (default:
    ``day_type_of(date)``): where a calendar date's load is read."""
    day_type = day_type or day_type_of(date)
    first = _dt.date(REFERENCE_YEAR, 1, 1).toordinal()
    n = 365
    k0 = same_day_in_reference_year(date).toordinal() - first
    for dist in range(n):
        for k in (k0 - dist, k0 + dist):
            cand = _dt.date.fromordinal(first + k % n)
            if _data_day_type(cand) == day_type:
                return cand
    raise ValueError(f"no date of {REFERENCE_YEAR} has day type {day_type!r}")


def calendar_frame(index: int, start: pd.Timestamp, duration_h: float, slot: int) -> Frame:
    """The frame of a real date: its day type, and where its load and weather are read."""
    date = start.date()
    day_type = day_type_of(date)
    offset = start - pd.Timestamp(date)
    return Frame(index, start, duration_h, day_type, slot,
                 load_ref=pd.Timestamp(reference_date(date, day_type)) + offset,
                 weather_ref=pd.Timestamp(same_day_in_reference_year(date)) + offset)


def frames_per_day(resolution_min: int) -> int:
    _check_resolution(resolution_min)
    return 24 * 60 // resolution_min


def _check_resolution(resolution_min: int) -> None:
    if resolution_min not in ALLOWED_RESOLUTIONS_MIN:
        raise ValueError(
            f"frame resolution must be one of {ALLOWED_RESOLUTIONS_MIN} minutes, "
            f"got {resolution_min!r}"
        )


def make_frames(
    *,
    day_types: Sequence[str] | None = None,
    slots: Iterable[int] | None = None,
    start: str | _dt.date | pd.Timestamp | None = None,
    end: str | _dt.date | pd.Timestamp | None = None,
    resolution_min: int = 15,
) -> list[Frame]:
    """Turn a selection into a list of frames.

    Either select day types (``day_types``, default all nine, each at its representative
    date) with optional within-day ``slots`` (frame indices, e.g. ``range(68, 80)`` for
    17:00-20:00 at 15 min), or a date range ``start`` .. ``end`` (``end`` exclusive,
    timestamps in CET; every frame gets the day type of its calendar date and reads its
    profiles as :func:`calendar_frame` says).
    """
    _check_resolution(resolution_min)
    n_day = frames_per_day(resolution_min)
    step = pd.Timedelta(minutes=resolution_min)
    dur = resolution_min / 60.0
    frames: list[Frame] = []
    if start is not None or end is not None:
        if start is None or end is None or day_types is not None:
            raise ValueError("give either day_types (and slots) or both start and end")
        t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
        if t1 <= t0:
            raise ValueError(f"end {t1} must be after start {t0}")
        wanted = None if slots is None else set(slots)
        times = pd.date_range(t0.floor(step), t1, freq=step, inclusive="left")
        slot_of = (times.hour * 60 + times.minute) // resolution_min
        if wanted is not None:
            keep = np.isin(slot_of, sorted(wanted))
            times, slot_of = times[keep], slot_of[keep]
        codes, days = pd.factorize(times.normalize())
        types, to_load, to_weather = [], [], []
        for day in days:  # per date once: day type, the days where load and weather are read
            date = day.date()
            types.append(day_type_of(date))
            to_load.append(pd.Timestamp(reference_date(date, types[-1])) - day)
            to_weather.append(pd.Timestamp(same_day_in_reference_year(date)) - day)
        types = np.array(types, dtype=object)[codes]
        load_refs = times + pd.TimedeltaIndex(to_load)[codes]
        weather_refs = times + pd.TimedeltaIndex(to_weather)[codes]
        frames = [Frame(k, t, dur, dt, int(sl), load_ref=lr, weather_ref=wr)
                  for k, (t, dt, sl, lr, wr) in enumerate(zip(times, types, slot_of, load_refs,
                                                               weather_refs, strict=True))]
        return frames
    chosen = DAY_TYPES if day_types is None else tuple(day_types)
    unknown = [d for d in chosen if d not in DAY_TYPES]
    if unknown:
        raise ValueError(f"unknown day type(s) {unknown}; valid: {DAY_TYPES}")
    slot_list = list(range(n_day)) if slots is None else sorted(set(int(s) for s in slots))
    bad = [s for s in slot_list if not 0 <= s < n_day]
    if bad:
        raise ValueError(f"frame indices {bad[:5]} outside 0..{n_day - 1} at {resolution_min} min")
    for dtype in chosen:
        day0 = pd.Timestamp(REPRESENTATIVE_DATES[dtype])
        for s in slot_list:
            frames.append(Frame(len(frames), day0 + s * step, dur, dtype, s))
    return frames
