"""The frame clock: one time axis for every simulator, agent and result table.

A :class:`FrameClock` is built once from the scenario (day types and slots, or a calendar
range of real dates, :meth:`FrameClock.for_calendar`) and handed to every simulator as a
plain dict (``to_dict`` / ``from_dict``, so it crosses process boundaries as JSON). It answers

- how long a frame is (``resolution_min``, ``step_s``, ``frame_h``);
- which frame a mosaik time is (``index_at``, ``frame_at``) and back (``time_of``);
- each frame's date, BDEW day type, slot of the day and timestamp.

Daylight-saving policy: frames run in CET (UTC+01:00) all year, as the BDEW load profiles
and the DWD test reference year do; every day has 24 hours (96 frames at 15 minutes, 24 at
60). ``Frame.start`` is that time without a zone; :attr:`Frame.timestamp` carries the fixed
offset ``+01:00``. Local wall-clock time in summer is one hour later (CEST):
``frame.timestamp.tz_convert("Europe/Berlin")``.

Unit states (:meth:`FrameClock.state_key`): the flexibility units start fresh whenever the
key changes. Day-type runs: at every new day type (each representative day stands alone).
Calendar runs: ``unit_state = "carry"`` (default) never resets, so batteries, EVs and
heat-pump storage carry their state across midnight and from day to day (over the frames
that run: with a subset of slots a unit stands still between them); ``"reset_daily"``
starts fresh units at every date.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from flexcore.district.daytypes import DAY_TYPES, Frame, frames_per_day, make_frames
from flexcore.errors import FlexcosimError

#: how calendar runs treat unit states between days (see the module docstring)
UNIT_STATES = ("carry", "reset_daily")

#: the fixed zone of every frame timestamp (see the module docstring)
TIMEZONE = "Etc/GMT-1"  # POSIX sign convention: UTC+01:00


class ClockError(FlexcosimError, ValueError):
    """A frame or time that is not on the clock."""


@dataclass(frozen=True)
class FrameClock:
    """The frames of one run and the mapping between frames and mosaik time (seconds)."""

    frames: tuple[Frame, ...]
    resolution_min: int
    spec: tuple[tuple[str, Any], ...] = ()  # how it was built, for to_dict

    # ------------------------------------------------------------ construction
    @classmethod
    def for_day_types(cls, day_types: Sequence[str] = DAY_TYPES,
                      slots: Iterable[int] | None = None, *, resolution_min: int = 15
                      ) -> FrameClock:
        """Each day type at its representative date, the given slots of the day (default
        all), at ``resolution_min`` (15 or 60) minutes."""
        day_types = tuple(day_types)
        slot_list = None if slots is None else sorted({int(s) for s in slots})
        try:
            frames = make_frames(day_types=day_types, slots=slot_list,
                                 resolution_min=resolution_min)
        except ValueError as exc:
            raise ClockError(str(exc)) from None
        spec = (("resolution_min", int(resolution_min)), ("day_types", list(day_types)),
                ("slots", slot_list))
        return cls(tuple(frames), int(resolution_min), spec)

    @classmethod
    def for_calendar(cls, start: str | pd.Timestamp, end: str | pd.Timestamp, *,
                     day_types: Sequence[str] | None = None, slots: Iterable[int] | None = None,
                     resolution_min: int = 15, unit_state: str = "carry") -> FrameClock:
        """Real dates ``start`` .. ``end`` (exclusive, CET), each with its BDEW day type
        (:func:`flexcore.district.daytypes.day_type_of`); ``day_types`` keeps only the dates
        of those day types, ``slots`` only those frames of each day; ``unit_state``
        "carry" or "reset_daily" (module docstring)."""
        if unit_state not in UNIT_STATES:
            raise ClockError(f"unit_state must be one of {list(UNIT_STATES)}, got "
                             f"{unit_state!r}")
        t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
        slot_list = None if slots is None else sorted({int(s) for s in slots})
        try:
            frames = make_frames(start=t0, end=t1, slots=slot_list,
                                 resolution_min=resolution_min)
        except ValueError as exc:
            raise ClockError(str(exc)) from None
        kept = list(DAY_TYPES) if day_types is None else list(day_types)
        if day_types is not None:
            frames = [dataclasses.replace(f, index=k) for k, f in
                      enumerate(f for f in frames if f.day_type in set(kept))]
        if not frames:
            raise ClockError(f"no frame between {t0} and {t1} of day types {kept}")
        spec = (("resolution_min", int(resolution_min)), ("day_types", kept),
                ("slots", slot_list), ("calendar", {"start": t0.isoformat(),
                                                   "end": t1.isoformat()}),
                ("unit_state", unit_state))
        return cls(tuple(frames), int(resolution_min), spec)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameClock:
        """The clock described by :meth:`to_dict`."""
        if data.get("calendar"):
            days = data["day_types"]
            return cls.for_calendar(
                data["calendar"]["start"], data["calendar"]["end"],
                day_types=None if list(days) == list(DAY_TYPES) else days,
                slots=data.get("slots"), resolution_min=int(data["resolution_min"]),
                unit_state=data.get("unit_state", "carry"))
        return cls.for_day_types(data["day_types"], data.get("slots"),
                                 resolution_min=int(data["resolution_min"]))

    @classmethod
    def of(cls, clock: FrameClock | dict[str, Any]) -> FrameClock:
        """``clock`` itself, or the clock a :meth:`to_dict` dict describes (simulator params)."""
        return clock if isinstance(clock, FrameClock) else cls.from_dict(clock)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description that :meth:`from_dict` rebuilds exactly."""
        return dict(self.spec)

    @property
    def calendar(self) -> bool:
        """True for a run of real dates (:meth:`for_calendar`)."""
        return bool(dict(self.spec).get("calendar"))

    def state_key(self, frame: Frame) -> Any:
        """Units start fresh where this key changes (module docstring): the day type in a
        day-type run; in a calendar run the date ("reset_daily") or nothing ("carry")."""
        if not self.calendar:
            return frame.day_type
        if dict(self.spec).get("unit_state") == "reset_daily":
            return frame.start.date()
        return None

    # ------------------------------------------------------------ lengths
    def __len__(self) -> int:
        return len(self.frames)

    @property
    def step_s(self) -> int:
        """mosaik seconds per frame."""
        return self.resolution_min * 60

    @property
    def frame_h(self) -> float:
        """Hours per frame (energy = power x frame_h)."""
        return self.resolution_min / 60.0

    @property
    def frames_per_day(self) -> int:
        return frames_per_day(self.resolution_min)

    @property
    def until_s(self) -> int:
        """mosaik end time of a run over all frames."""
        return len(self.frames) * self.step_s

    # ------------------------------------------------------------ time <-> frame
    def index_at(self, time_s: int) -> int:
        """The run-local frame index at mosaik time ``time_s``."""
        k, rest = divmod(int(time_s), self.step_s)
        if rest or not 0 <= k < len(self.frames):
            raise ClockError(f"mosaik time {time_s} s is not the start of a frame of this run "
                             f"({len(self.frames)} frames of {self.step_s} s)")
        return k

    def frame_at(self, time_s: int) -> Frame:
        return self.frames[self.index_at(time_s)]

    def time_of(self, index: int) -> int:
        """mosaik time (s) at which frame ``index`` starts."""
        if not 0 <= index < len(self.frames):
            raise ClockError(f"frame {index} is not in this run (0..{len(self.frames) - 1})")
        return int(index) * self.step_s

    def new_day(self, index: int) -> bool:
        """True at the first frame of a run and wherever the date changes."""
        return index == 0 or self.frames[index].start.date() != \
            self.frames[index - 1].start.date()

    # ------------------------------------------------------------ tables
    def table(self) -> pd.DataFrame:
        """One row per frame: ``frame``, ``timestamp`` (tz-aware, +01:00), ``date``,
        ``day_type``, ``slot``, ``clock_time`` ("HH:MM")."""
        return pd.DataFrame({
            "frame": [f.index for f in self.frames],
            "timestamp": [f.timestamp for f in self.frames],
            "date": [f.start.date() for f in self.frames],
            "day_type": [f.day_type for f in self.frames],
            "slot": [f.slot for f in self.frames],
            "clock_time": [f.start.strftime("%H:%M") for f in self.frames],
        })
