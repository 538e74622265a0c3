"""BDEW day types and simulation time frames.

The BDEW standard load profiles distinguish nine day types: three seasons (winter
01.11.-20.03., summer 15.05.-14.09., transition otherwise) times workday / Saturday /
Sunday-or-public-holiday. Each day type is represented by one date of the reference year
2010, the year of the DWD test reference year (TRY 2010) that drives the weather, so load,
PV and temperature belong to the same calendar day. The dates avoid public holidays and
the edges of the seasons (a Wednesday stands for all workdays).

All timestamps are naive and in CET (UTC+1, no daylight saving time), as in the BDEW
profiles and the TRY data.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


def season_of(date: _dt.date) -> str:
    """BDEW season of a date."""
    md = (date.month, date.day)
    if md >= (11, 1) or md <= (3, 20):
        return "winter"
    if (5, 15) <= md <= (9, 14):
        return "summer"
    return "transition"


def day_type_of(date: _dt.date) -> str:
    """BDEW day type of a calendar date (public holidays count as Sundays, as in demandlib)."""
    if date in set(holidays_bw(date.year)) or date.weekday() == 6:
        kind = "sunday"
    elif date.weekday() == 5:
        kind = "saturday"
    else:
        kind = "workday"
    return f"{season_of(date)}_{kind}"


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
    timestamps in CET; every frame gets the day type of its calendar date).
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
        t = t0.floor(step)
        while t < t1:
            slot = (t.hour * 60 + t.minute) // resolution_min
            if wanted is None or slot in wanted:
                frames.append(Frame(len(frames), t, dur, day_type_of(t.date()), slot))
            t += step
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
