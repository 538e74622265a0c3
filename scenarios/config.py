"""Scenario TOML -> validated dataclasses; every error names the offending key.

Tables (all optional except ``[scenario]``; defaults in the dataclasses below)::

    [scenario]   name, seed, grid ("bergwald" | "simbench:CODE" | JSON path),
                 buildings ("bergwald" | "grid_loads" | CSV path), pv_penetration,
                 day_types (list, default all nine), slots ("all" | "64-80" | [68, 72]),
                 warmup_frames (int >= 0, default 0: frames computed before the first
                 slot of each day type and not recorded; scenarios.bergwald.run_clock)
    [simulation] starter ("python" in-process | "cmd" separate processes),
                 package_exchange ("auto" | "memory" | "files": how the DSO hands each
                 sensitivity package to the TSO; auto = memory in-process, files with cmd)
    [request]    default_mw, csv (columns time=HH:MM, request_mw), [[request.window]]
                 start = "17:00", end = "19:00", mw = 1.8 (end exclusive, every day)
    [dso]        operating_points, relinearize_every, relinearize_threshold_mw, screening,
                 refine_rounds, tol_vm_mae_pu, tol_loading_mae_percent, dispatch_unsafe,
                 privacy ("exact" default: format 2 | "full": format 1, research |
                 "envelope"), exact_rows ("request" default: the rows of the announced
                 request | "screened": LP-screened rows of every request, slow),
                 audit ("sample" default: the first round-0 package of each day type
                 and that of the largest request | "largest": only the latter |
                 "off"; dso/audit.json),
                 [dso.limits] vm_min_pu, vm_max_pu, loading_min_percent, loading_max_percent
    [market]     objective, mip_rel_gap
    [grid]       engine ("fast" default: flexcore.grid.fastpf, same results as pandapower |
                 "pandapower": recycled pp.runpp, the reference) for GridSim and the DSO
    [results]    plots (bool)
    [calendar]   year = 2025, or start = "2025-01-01", end = "2025-02-01" (end exclusive;
                 dates or "YYYY-MM-DDTHH:MM", CET), unit_state ("carry" default |
                 "reset_daily"): real dates instead of the representative days; day_types
                 and slots then select dates and frames of the day (README "Calendar runs");
                 chunks (default 1), warmup_days (default 2): the span in that many
                 parallel chunks, each but the first after warm-up days (scenarios.chunks)
    [test]       extra_load = [{frame = 2, mw = 50.0}]: TEST-ONLY knob, an unforecast load
                 added at the transformer's LV bus of the GridSim only (forces a
                 non-converging AC power flow without touching the DSO's forecast)
    [[fpu]]      flexibility units (flexcore.fpu.registry format)
    [[external_unit]] a flexibility unit that is a mosaik simulator of its own, connected to
                 a Port of the FPU simulator (README "Flexibility units as mosaik
                 simulators"): name (unit id: letters, digits, _ and -), building,
                 python = "module:Class" or cmd = "%(python)s -m module %(addr)s", model,
                 sim_params (init), params (create), attrs (port attribute -> unit attribute)
"""
from __future__ import annotations

import csv
import io
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from flexcore.district.clock import FrameClock
from flexcore.district.daytypes import DAY_TYPES, frames_per_day
from flexcore.errors import FlexcosimError
from flexcore.exchange.enums import Objective, PrivacyLevel
from flexcore.exchange.limits import Limits, LimitsError


class ConfigError(FlexcosimError, ValueError):
    """The scenario is malformed; the message names the key."""


@dataclass(frozen=True)
class RequestWindow:
    start_slot: int
    end_slot: int
    mw: float


#: ``[dso] audit``: which published packages a run audits (flexcore.dso.frame.PublicationAudit)
AUDIT_CHOICES = ("sample", "largest", "off")


@dataclass(frozen=True)
class DSOConfig:
    operating_points: tuple[float, ...] = (0.0, 0.5, 1.0)
    relinearize_every: int = 4
    relinearize_threshold_mw: float = 0.5
    screening: bool = True
    refine_rounds: int = 2
    tol_vm_mae_pu: float = 2.0e-5
    tol_loading_mae_percent: float = 5.0e-3
    dispatch_unsafe: bool = False
    privacy: str = "exact"  # what the DSO publishes: exact (format 2), full (1), envelope
    exact_rows: str = "request"  # format-2 rows: for the announced request, or "screened"
    audit: str = "sample"  # audited publications: sample, largest, off (dso/audit.json)
    limits: dict = field(default_factory=lambda: Limits().as_dict())  # flexcore's defaults


@dataclass(frozen=True)
class CalendarConfig:
    """A calendar run: real dates ``start`` .. ``end`` (exclusive, ISO text, CET)."""

    start: str
    end: str
    unit_state: str = "carry"
    #: split the span into this many consecutive date ranges run in parallel processes and
    #: merged into one run folder (scenarios.chunks); 1: one run, as without it
    chunks: int = 1
    #: days before each chunk (but the first) that its run computes and does not keep, so
    #: the units start near the state a sequential run would carry (scenarios.chunks)
    warmup_days: int = 2


@dataclass(frozen=True)
class ScenarioConfig:
    name: str
    seed: int
    grid: str
    buildings: str
    pv_penetration: float
    day_types: tuple[str, ...]
    slots: tuple[int, ...]
    resolution_min: int
    starter: str
    request_default_mw: float
    request_by_slot: tuple[float, ...]   # one value per slot of a day
    dso: DSOConfig
    objective: str
    mip_rel_gap: float
    plots: bool
    extra_load: tuple[tuple[int, float], ...]   # test-only (frame index, MW)
    fpu: tuple[dict, ...]
    source: str = ""
    package_exchange: str = "auto"
    #: frames run before the first slot of each day type and not recorded (see
    #: scenarios.bergwald.run_clock); 0: the units start fresh at the first recorded frame
    warmup_frames: int = 0
    external_units: tuple[dict, ...] = ()   # [[external_unit]] tables, validated
    calendar: CalendarConfig | None = None
    grid_engine: str = "fast"  # [grid] engine: power flows of GridSim and the DSO

    @property
    def exchange(self) -> str:
        """The package exchange in effect: "memory" or "files"."""
        if self.package_exchange != "auto":
            return self.package_exchange
        return "memory" if self.starter == "python" else "files"

    def to_dict(self) -> dict:
        return asdict(self)

    def request_mw(self, slot: int) -> float:
        return self.request_by_slot[slot]

    def clock(self) -> FrameClock:
        """The run's frame clock: ``day_types`` x ``slots`` at ``resolution_min``, or with
        ``calendar`` the dates of those day types and their ``slots``."""
        if self.calendar is not None:
            all_types = tuple(self.day_types) == DAY_TYPES
            all_slots = tuple(self.slots) == tuple(range(frames_per_day(self.resolution_min)))
            return FrameClock.for_calendar(
                self.calendar.start, self.calendar.end,
                day_types=None if all_types else self.day_types,
                slots=None if all_slots else self.slots, resolution_min=self.resolution_min,
                unit_state=self.calendar.unit_state)
        return FrameClock.for_day_types(self.day_types, self.slots,
                                        resolution_min=self.resolution_min)


_TOP = {"scenario", "simulation", "request", "dso", "market", "results", "test", "fpu",
        "external_unit", "calendar", "grid"}
_KEYS = {
    "scenario": {"name", "seed", "grid", "buildings", "pv_penetration", "day_types", "slots",
                 "resolution_min", "warmup_frames"},
    "simulation": {"starter", "package_exchange"},
    "request": {"default_mw", "csv", "window"},
    "dso": {"operating_points", "relinearize_every", "relinearize_threshold_mw", "screening",
            "refine_rounds", "tol_vm_mae_pu", "tol_loading_mae_percent", "dispatch_unsafe",
            "privacy", "exact_rows", "audit", "limits"},
    "market": {"objective", "mip_rel_gap"},
    "results": {"plots"},
    "test": {"extra_load"},
    "calendar": {"year", "start", "end", "unit_state", "chunks", "warmup_days"},
    "grid": {"engine"},
}
OBJECTIVES = Objective.values()


def _get(table: dict, section: str, key: str, kind: type | tuple, default: Any) -> Any:
    value = table.get(key, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise ConfigError(f"[{section}] {key}: expected {names}, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"[{section}] {key}: must be a finite number, got {value!r}")
    return value


def _show(value: Any) -> str:
    """``repr`` of a value, shortened for a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _at_least(section: str, key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"[{section}] {key}: must be >= {low:g}, got {value!r}")


def _check_keys(section: str, table: Any, allowed: set[str]) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"[{section}] unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return table


def parse_slots(text: str | list | None, n_day: int, *, key: str = "[scenario] slots"
                ) -> tuple[int, ...]:
    """``"all"``, ``"64-80"`` (inclusive), ``"68,72"`` or a list of ints -> slot tuple."""
    if text is None or text == "all":
        return tuple(range(n_day))
    items: list[int] = []
    bad_range = ""
    shown = _show(text)
    if isinstance(text, list) and not all(isinstance(x, int) and not isinstance(x, bool)
                                          for x in text):
        raise ConfigError(f"{key}: expected a list of ints, got {shown}")
    if not isinstance(text, (list, str)):
        raise ConfigError(f"{key}: expected 'all', 'A-B', 'a,b,c' or a list of ints, got {shown}")
    try:
        if isinstance(text, list):
            items = list(text)
        else:
            for part in text.split(","):
                part = part.strip()
                if "-" in part:
                    a, b = (int(v) for v in part.split("-", 1))
                    if not 0 <= a <= b < n_day:  # before building it: "0-99999999999"
                        bad_range = part
                        break
                    items += list(range(a, b + 1))
                elif part:
                    items.append(int(part))
    except ValueError:
        raise ConfigError(f"{key}: expected 'all', 'A-B', 'a,b,c' or a list of ints, got {shown}"
                          ) from None
    if bad_range:
        raise ConfigError(f"{key}: range {_show(bad_range)} must lie in 0..{n_day - 1}")
    bad = [s for s in items if not 0 <= s < n_day]
    if bad or not items:
        raise ConfigError(f"{key}: slots must be in 0..{n_day - 1}, got {shown}")
    return tuple(sorted(set(items)))


def _hhmm(text: Any, key: str, resolution_min: int) -> int:
    if not isinstance(text, str):
        raise ConfigError(f"{key}: expected 'HH:MM', got {_show(text)}")
    try:
        h, m = text.split(":")
        if not (h.strip().isdigit() and m.strip().isdigit() and len(h.strip()) <= 2
                and len(m.strip()) <= 2):
            raise ValueError(text)
        minutes = int(h) * 60 + int(m)
    except ValueError:
        raise ConfigError(f"{key}: expected 'HH:MM', got {_show(text)}") from None
    if minutes % resolution_min or not 0 <= minutes <= 24 * 60 or int(m) >= 60:
        raise ConfigError(f"{key}: {text!r} is not on the {resolution_min}-min grid of a day")
    return minutes // resolution_min


def _request_profile(req: dict, n_day: int, res: int, base_dir: Path) -> tuple[float, tuple]:
    default = _get(req, "request", "default_mw", float, 0.0)
    prof = [default] * n_day
    if "csv" in req:
        path = Path(_get(req, "request", "csv", str, ""))
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise ConfigError(f"[request] csv: file not found: {path}")
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise ConfigError(f"[request] csv {path}:{line}: not UTF-8 text") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                lineno = reader.line_num
                try:
                    slot = _hhmm(row.get("time"), f"[request] csv {path}:{lineno} time", res)
                    value = float(row.get("request_mw") or "")
                except ValueError:
                    raise ConfigError(f"[request] csv {path}:{lineno}: need columns time "
                                      "(HH:MM) and request_mw (number)") from None
                if not math.isfinite(value):
                    raise ConfigError(f"[request] csv {path}:{lineno}: request_mw must be "
                                      f"finite, got {row.get('request_mw')!r}")
                if slot >= n_day:
                    raise ConfigError(f"[request] csv {path}:{lineno}: time "
                                      f"{row.get('time')!r} is the end of the day, not a frame")
                prof[slot] = value
        except csv.Error as exc:
            raise ConfigError(f"[request] csv {path}:{reader.line_num}: not a readable CSV "
                              f"row ({exc})") from None
    windows = req.get("window", [])
    if not isinstance(windows, list):
        raise ConfigError("[request] window: expected [[request.window]] tables")
    for k, w in enumerate(windows):
        where = f"[[request.window]] #{k + 1}"
        _check_keys(f"request.window #{k + 1}", w, {"start", "end", "mw"})
        for key in ("start", "end", "mw"):
            if key not in w:
                raise ConfigError(f"{where}: missing key '{key}'")
        a = _hhmm(w["start"], f"{where} start", res)
        b = _hhmm(w["end"], f"{where} end", res)
        if b <= a:
            raise ConfigError(f"{where}: end {w['end']!r} must be after start {w['start']!r}")
        mw = _get(w, f"request.window #{k + 1}", "mw", float, 0.0)
        for s in range(a, min(b, n_day)):
            prof[s] = mw
    return default, tuple(prof)


def _calendar_time(cal: dict, key: str) -> pd.Timestamp:
    """``[calendar] start``/``end``: a TOML date or local date-time, or its ISO text."""
    import datetime as dt

    value = cal[key]
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        raise ConfigError(f"[calendar] {key}: give a local time (CET), not {value!r}")
    if not isinstance(value, (str, dt.date)):
        raise ConfigError(f"[calendar] {key}: expected a date such as '2025-01-01', got "
                          f"{_show(value)}")
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"[calendar] {key}: expected a date such as '2025-01-01' or "
                          f"'2025-01-01T18:00', got {_show(value)}") from None
    if t.tzinfo is not None or not 1900 <= t.year <= 2199:
        raise ConfigError(f"[calendar] {key}: expected a local date of 1900..2199, got "
                          f"{_show(value)}")
    return t


#: the most chunks a calendar run may be split into (``[calendar] chunks``)
MAX_CHUNKS = 366


def parse_calendar(cal: Any, resolution_min: int) -> CalendarConfig:
    """Validate a ``[calendar]`` table (year, or start and end; unit_state; chunks and
    warmup_days: scenarios.chunks)."""
    from flexcore.district.clock import UNIT_STATES

    cal = _check_keys("calendar", cal, _KEYS["calendar"])
    if "year" in cal:
        if "start" in cal or "end" in cal:
            raise ConfigError("[calendar] year: give either year or start and end, not both")
        year = _get(cal, "calendar", "year", int, 0)
        if not 1900 <= year <= 2199:
            raise ConfigError(f"[calendar] year: expected 1900..2199, got {year}")
        t0, t1 = pd.Timestamp(year=year, month=1, day=1), pd.Timestamp(year=year + 1, month=1,
                                                                       day=1)
    else:
        for key in ("start", "end"):
            if key not in cal:
                raise ConfigError(f"[calendar] {key}: missing (give year, or start and end)")
        t0, t1 = _calendar_time(cal, "start"), _calendar_time(cal, "end")
        if t1 <= t0:
            raise ConfigError(f"[calendar] end: {t1} must be after start {t0}")
        for key, t in (("start", t0), ("end", t1)):
            if (t - t.normalize()) % pd.Timedelta(minutes=resolution_min):
                raise ConfigError(f"[calendar] {key}: {t} is not on the {resolution_min}-min "
                                  "grid")
    unit_state = _get(cal, "calendar", "unit_state", str, "carry")
    if unit_state not in UNIT_STATES:
        raise ConfigError(f"[calendar] unit_state: expected one of {list(UNIT_STATES)}, got "
                          f"{_show(unit_state)}")
    chunks = _get(cal, "calendar", "chunks", int, 1)
    if not 1 <= chunks <= MAX_CHUNKS:
        raise ConfigError(f"[calendar] chunks: must be in 1..{MAX_CHUNKS}, got {chunks}")
    warmup_days = _get(cal, "calendar", "warmup_days", int, 2)
    if not 0 <= warmup_days <= 366:
        raise ConfigError(f"[calendar] warmup_days: must be in 0..366, got {warmup_days}")
    return CalendarConfig(t0.isoformat(), t1.isoformat(), unit_state, chunks, warmup_days)


def with_calendar(cfg: ScenarioConfig, text: str) -> ScenarioConfig:
    """``flexcosim run --calendar 2025`` or ``--calendar 2025-01-01..2025-02-01``: the
    scenario on real dates (replaces its ``[calendar]`` range, keeps its unit_state)."""
    from dataclasses import replace

    text = text.strip()
    if ".." in text:
        start, end = (t.strip() for t in text.split("..", 1))
        table: dict[str, Any] = {"start": start, "end": end}
    else:
        try:
            table = {"year": int(text)}
        except ValueError:
            raise ConfigError(f"--calendar: expected YEAR or START..END, got {_show(text)}"
                              ) from None
    if cfg.calendar is not None:
        table |= {k: getattr(cfg.calendar, k) for k in ("unit_state", "chunks", "warmup_days")}
    try:
        return replace(cfg, calendar=parse_calendar(table, cfg.resolution_min))
    except ConfigError as exc:
        raise ConfigError(f"--calendar: {exc}") from None


def _check_fpu_types(k: int, entry: Any) -> None:
    """The TOML types of one ``[[fpu]]`` table (the registry checks the meaning): class and
    name strings, building_types a list of strings, penetration a finite number or a table of
    them, params a table."""
    where = f"fpu #{k + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"[[fpu]] #{k + 1}: expected a table, got {_show(entry)}")
    for key in ("class", "name"):
        if key in entry:
            _get(entry, where, key, str, "")
    types = entry.get("building_types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"[{where}] building_types: expected a list of strings, got "
                          f"{_show(types)}")
    pen = entry.get("penetration", 1.0)
    if isinstance(pen, dict):
        for t in pen:
            _get(pen, f"{where} penetration", t, float, 0.0)
    else:
        _get(entry, where, "penetration", float, 1.0)
    if "params" in entry:
        _get(entry, where, "params", dict, {})


EXTERNAL_UNIT_KEYS = {"name", "building", "python", "cmd", "model", "sim_params", "params",
                      "attrs"}


def _external_units(doc: dict) -> tuple[dict, ...]:
    """The ``[[external_unit]]`` tables, checked (the building is checked against the
    district when the scenario starts)."""
    import re

    entries = doc.get("external_unit", [])
    if not isinstance(entries, list):
        raise ConfigError("external_unit: expected [[external_unit]] tables")
    if not entries:
        return ()
    from simulators.fpu_ports import PORT_INPUTS, PORT_OUTPUTS

    port_attrs = {a for a, _ in PORT_INPUTS + PORT_OUTPUTS}
    out, names = [], set()
    for k, e in enumerate(entries):
        where = f"external_unit #{k + 1}"
        _check_keys(where, e, EXTERNAL_UNIT_KEYS)
        for key in ("name", "building", "model"):
            if key not in e:
                raise ConfigError(f"[{where}] missing key '{key}'")
            _get(e, where, key, str, "")
        name = e["name"]
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ConfigError(f"[{where}] name: letters, digits, '_' and '-' only, got "
                              f"{_show(name)}")
        if name in names:
            raise ConfigError(f"[{where}] name: {name!r} is used twice")
        names.add(name)
        if ("python" in e) == ("cmd" in e):
            raise ConfigError(f"[{where}] needs exactly one of 'python' (\"module:Class\") and "
                              "'cmd' (\"%(python)s -m module %(addr)s\")")
        starter = "python" if "python" in e else "cmd"
        text = _get(e, where, starter, str, "")
        if starter == "python" and not re.fullmatch(r"[\w.]+:\w+", text):
            raise ConfigError(f"[{where}] python: expected 'module:Class', got {_show(text)}")
        if starter == "cmd" and "%(addr)s" not in text:
            raise ConfigError(f"[{where}] cmd: must contain %(addr)s (where mosaik listens), "
                              f"got {_show(text)}")
        for key in ("sim_params", "params", "attrs"):
            _get(e, where, key, dict, {})
        attrs = e.get("attrs", {})
        bad = sorted(set(attrs) - port_attrs)
        if bad:
            raise ConfigError(f"[{where}] attrs: unknown port attribute(s) {bad}; allowed: "
                              f"{sorted(port_attrs)}")
        for a in attrs:
            _get(attrs, f"{where} attrs", a, str, "")
        out.append({"name": name, "building": e["building"], starter: text,
                    "model": e["model"], "sim_params": dict(e.get("sim_params", {})),
                    "params": dict(e.get("params", {})), "attrs": dict(attrs)})
    return tuple(out)


def parse_config(doc: dict, *, source: str = "<dict>", base_dir: Path | None = None
                 ) -> ScenarioConfig:
    """Validate a loaded TOML document."""
    base_dir = base_dir or Path.cwd()
    _check_keys("top level", doc, _TOP)
    if "scenario" not in doc:
        raise ConfigError("missing table [scenario]")
    sc = _check_keys("scenario", doc["scenario"], _KEYS["scenario"])
    res = _get(sc, "scenario", "resolution_min", int, 15)
    try:
        n_day = frames_per_day(res)
    except ValueError as exc:
        raise ConfigError(f"[scenario] resolution_min: {exc}") from None
    day_types = tuple(_get(sc, "scenario", "day_types", list, list(DAY_TYPES)))
    bad = [d for d in day_types if not isinstance(d, str) or d not in DAY_TYPES]
    if bad or not day_types:
        raise ConfigError(f"[scenario] day_types: unknown {bad}; valid: {list(DAY_TYPES)}")
    slots = parse_slots(sc.get("slots", "all"), n_day)
    pv = _get(sc, "scenario", "pv_penetration", float, 0.6)
    if not 0.0 <= pv <= 1.0:
        raise ConfigError(f"[scenario] pv_penetration: must be in [0, 1], got {pv}")
    sim = _check_keys("simulation", doc.get("simulation", {}), _KEYS["simulation"])
    starter = _get(sim, "simulation", "starter", str, "python")
    if starter not in ("python", "cmd"):
        raise ConfigError(f"[simulation] starter: expected 'python' or 'cmd', got {starter!r}")
    exchange = _get(sim, "simulation", "package_exchange", str, "auto")
    if exchange not in ("auto", "memory", "files") or (exchange == "memory"
                                                        and starter == "cmd"):
        raise ConfigError("[simulation] package_exchange: expected 'auto', 'files' or (with "
                          f"starter 'python') 'memory', got {exchange!r}")
    req = _check_keys("request", doc.get("request", {}), _KEYS["request"])
    default_mw, profile = _request_profile(req, n_day, res, base_dir)
    d = _check_keys("dso", doc.get("dso", {}), _KEYS["dso"])
    base = DSOConfig()
    lim = _check_keys("dso.limits", d.get("limits", {}), set(base.limits))
    for k in lim:
        _get(lim, "dso.limits", k, float, 0.0)  # names the key of a non-number or NaN/inf
    try:
        limits = Limits.from_dict(lim, where="[dso.limits]").as_dict()
    except LimitsError as exc:
        raise ConfigError(str(exc)) from None
    pts = _get(d, "dso", "operating_points", list, list(base.operating_points))
    if not pts or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                          and 0.0 <= x <= 1.0 for x in pts):
        raise ConfigError("[dso] operating_points: expected fractions in [0, 1], got "
                          f"{_show(pts)}")
    dso = DSOConfig(
        operating_points=tuple(float(x) for x in pts),
        relinearize_every=_get(d, "dso", "relinearize_every", int, base.relinearize_every),
        relinearize_threshold_mw=_get(d, "dso", "relinearize_threshold_mw", float,
                                      base.relinearize_threshold_mw),
        screening=_get(d, "dso", "screening", bool, base.screening),
        refine_rounds=_get(d, "dso", "refine_rounds", int, base.refine_rounds),
        tol_vm_mae_pu=_get(d, "dso", "tol_vm_mae_pu", float, base.tol_vm_mae_pu),
        tol_loading_mae_percent=_get(d, "dso", "tol_loading_mae_percent", float,
                                     base.tol_loading_mae_percent),
        dispatch_unsafe=_get(d, "dso", "dispatch_unsafe", bool, base.dispatch_unsafe),
        privacy=_get(d, "dso", "privacy", str, base.privacy),
        exact_rows=_get(d, "dso", "exact_rows", str, base.exact_rows),
        audit=_get(d, "dso", "audit", str, base.audit),
        limits=limits,
    )
    if dso.audit not in AUDIT_CHOICES:
        raise ConfigError(f"[dso] audit: expected one of {list(AUDIT_CHOICES)}, got "
                          f"{dso.audit!r}")
    if dso.privacy not in PrivacyLevel.values():
        raise ConfigError(f"[dso] privacy: expected one of {list(PrivacyLevel.values())}, got "
                          f"{dso.privacy!r}")
    if dso.exact_rows not in ("request", "screened"):
        raise ConfigError(f"[dso] exact_rows: expected request or screened, got "
                          f"{dso.exact_rows!r}")
    if dso.relinearize_every < 1:
        raise ConfigError(f"[dso] relinearize_every: must be >= 1, got {dso.relinearize_every}")
    if dso.refine_rounds < 0:
        raise ConfigError(f"[dso] refine_rounds: must be >= 0, got {dso.refine_rounds}")
    _at_least("dso", "relinearize_threshold_mw", dso.relinearize_threshold_mw, 0.0)
    _at_least("dso", "tol_vm_mae_pu", dso.tol_vm_mae_pu, 0.0)
    _at_least("dso", "tol_loading_mae_percent", dso.tol_loading_mae_percent, 0.0)
    mk = _check_keys("market", doc.get("market", {}), _KEYS["market"])
    objective = _get(mk, "market", "objective", str, "abs_cost")
    if objective not in OBJECTIVES:
        raise ConfigError(f"[market] objective: expected one of {OBJECTIVES}, got "
                          f"{_show(objective)}")
    gap = _get(mk, "market", "mip_rel_gap", float, 1e-6)
    if not 0.0 <= gap < 1.0:
        raise ConfigError(f"[market] mip_rel_gap: must be in [0, 1), got {gap!r}")
    rs = _check_keys("results", doc.get("results", {}), _KEYS["results"])
    ts = _check_keys("test", doc.get("test", {}), _KEYS["test"])
    extra = []
    for k, e in enumerate(_get(ts, "test", "extra_load", list, [])):
        _check_keys(f"test.extra_load #{k + 1}", e, {"frame", "mw"})
        extra.append((_get(e, f"test.extra_load #{k + 1}", "frame", int, 0),
                      _get(e, f"test.extra_load #{k + 1}", "mw", float, 0.0)))
        _at_least(f"test.extra_load #{k + 1}", "frame", extra[-1][0], 0)
    fpu = doc.get("fpu", [])
    if not isinstance(fpu, list):
        raise ConfigError("fpu: expected [[fpu]] tables")
    for k, entry in enumerate(fpu):
        _check_fpu_types(k, entry)
    if fpu:  # check the classes and keys now (clear errors before any simulator starts)
        from flexcore.fpu.registry import RegistryError, parse_fpu_config

        try:
            parse_fpu_config({"fpu": fpu})
        except RegistryError as exc:
            raise ConfigError(str(exc)) from None
    seed = _get(sc, "scenario", "seed", int, 0)
    _at_least("scenario", "seed", seed, 0)
    warmup = check_warmup_frames(_get(sc, "scenario", "warmup_frames", int, 0),
                                 key="[scenario] warmup_frames")
    calendar = parse_calendar(doc["calendar"], res) if "calendar" in doc else None
    gr = _check_keys("grid", doc.get("grid", {}), _KEYS["grid"])
    engine = _get(gr, "grid", "engine", str, "fast")
    if engine not in ("fast", "pandapower"):
        raise ConfigError(f"[grid] engine: expected 'fast' or 'pandapower', got {engine!r}")
    return ScenarioConfig(
        name=_get(sc, "scenario", "name", str, "scenario"),
        seed=seed,
        grid=_get(sc, "scenario", "grid", str, "bergwald"),
        buildings=_get(sc, "scenario", "buildings", str, "bergwald"),
        pv_penetration=pv, day_types=day_types, slots=slots, resolution_min=res,
        starter=starter, request_default_mw=default_mw, request_by_slot=profile, dso=dso,
        objective=objective, mip_rel_gap=gap,
        plots=_get(rs, "results", "plots", bool, True), extra_load=tuple(extra),
        fpu=tuple(fpu), source=source, package_exchange=exchange, warmup_frames=warmup,
        external_units=_external_units(doc), calendar=calendar, grid_engine=engine,
    )


#: the largest warm-up accepted (a year of 15-min frames; the warm-up is cut to the first
#: slot anyway in day-type runs)
MAX_WARMUP_FRAMES = 366 * 96


def check_warmup_frames(value: int, *, key: str) -> int:
    """``warmup_frames`` (TOML key or ``--warmup-frames``): an int in 0..MAX_WARMUP_FRAMES."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected int, got {_show(value)}")
    if not 0 <= value <= MAX_WARMUP_FRAMES:
        raise ConfigError(f"{key}: must be in 0..{MAX_WARMUP_FRAMES}, got {value}")
    return value


def read_toml(path: Path, *, what: str = "scenario file") -> dict:
    """A TOML file's document; ConfigError naming the file if it is missing, not UTF-8 or
    not TOML (scenario and sweep files)."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path: str | Path) -> ScenarioConfig:
    """Read and validate a scenario TOML file."""
    path = Path(path)
    doc = read_toml(path)
    try:
        return parse_config(doc, source=str(path), base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
