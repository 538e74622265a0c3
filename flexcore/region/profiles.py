"""SimBench's own time series for a region: one day of 2016, diversified per unit.

SimBench ships 35,136 quarter-hours of the 2016 calendar for every profile type (loads
``H0-A``, ``G1-B``, ..., heat pumps and EVs in scenarios 1 and 2, PV/wind/biomass sgens,
storage). :func:`region_profiles` takes one day of them:

- ``date="2016-01-13"`` picks that day of SimBench's year 2016;
- ``day_type="winter_workday"`` (a BDEW day type of :mod:`flexcore.district.daytypes`) picks
  the 2016 date nearest to that day type's representative date's month and day that has
  the day type (:func:`simbench_date`): winter_workday 2016-01-20, winter_saturday
  2016-01-23, winter_sunday 2016-01-24, summer_workday 2016-07-21, summer_saturday
  2016-07-23, summer_sunday 2016-07-24, transition_workday 2016-04-21,
  transition_saturday 2016-04-23, transition_sunday 2016-04-24 (default: winter_workday).

The absolute values are SimBench's: ``simbench.get_absolute_values(...,
profiles_instead_of_study_cases=True)`` (relative profile x the element's ``p_mw`` /
``q_mvar``) on the day's rows. Elements without a profile name (column ``profile`` empty
or missing) keep their static value and are not diversified.

**Diversification** (units of one profile type must not move in lock-step). Per element,
seeded by ``seed`` and the element table:

- loads and storage are shifted in time by an integer number of quarter-hours drawn
  uniformly from ``-max_shift .. max_shift`` (default +-2 = +-30 min; values read from the
  neighbouring days, wrapping around SimBench's year);
- loads are then multiplied per quarter-hour by ``max(0, 1 + noise * N(0, 1))`` (default
  noise 0.05) and rescaled so that each load's daily energy equals SimBench's exactly; its
  reactive power gets the same shift and factors (SimBench's power factor at every step);
- storage is only shifted (its daily sum changes by the shifted-in quarter-hours);
- sgens (PV, wind, ...) keep SimBench's values: one region shares its sun and wind.

With ``resolution_min=60`` a frame is the mean of its four quarter-hours.
"""
from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import dataclass

import numpy as np
import pandapower as pp
import pandas as pd

from flexcore.district.daytypes import (
    ALLOWED_RESOLUTIONS_MIN,
    DAY_TYPES,
    REPRESENTATIVE_DATES,
    day_type_of,
)
from flexcore.errors import FlexcosimError

#: SimBench's profile year and its length in quarter-hours
SIMBENCH_YEAR = 2016
QUARTER_HOURS = 35_136
_PER_DAY = 96
_TABLES = ("load", "sgen", "storage")
_SEED_KEY = {"load": 1, "sgen": 2, "storage": 3}
#: the relative profile (all ones) of an element without a SimBench profile name
_STATIC = "flexcosim-static"


class ProfileError(FlexcosimError, ValueError):
    """A day type, date or grid whose SimBench profiles cannot be used."""


def matching_rows(net: pp.pandapowerNet, table: str, index: np.ndarray, bus: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``index``, positions in ``net[table]``) of the rows of ``net[table]``
    that are these elements: same index AND same bus (the MV model's area loads are new rows
    whose indices may equal LV loads' indices)."""
    if table not in net or not len(net[table]) or not len(index):
        return np.zeros(0, int), np.zeros(0, int)
    where = pd.Index(index).get_indexer(net[table].index)
    found = np.flatnonzero(where >= 0)
    ok = bus[where[found]] == net[table].bus.to_numpy(np.int64)[found]
    return where[found[ok]], found[ok]


@dataclass(frozen=True)
class RegionProfiles:
    """One day of per-element values (region element indices), one row per frame."""

    timestamps: pd.DatetimeIndex
    load_index: np.ndarray
    load_p_mw: np.ndarray        # (frames, n_load)
    load_q_mvar: np.ndarray
    sgen_index: np.ndarray
    sgen_p_mw: np.ndarray        # (frames, n_sgen)
    storage_index: np.ndarray
    storage_p_mw: np.ndarray     # (frames, n_storage), may have 0 columns
    date: _dt.date
    day_type: str
    load_bus: np.ndarray         # each element's bus: a row of another net matches only
    sgen_bus: np.ndarray         # with the same index and bus (the MV net's area loads
    storage_bus: np.ndarray      # reuse indices of LV loads)

    @property
    def frames(self) -> int:
        return len(self.timestamps)

    def apply(self, net: pp.pandapowerNet, frame: int) -> None:
        """Write frame ``frame``'s values into ``net``: only the rows of ``net``'s load, sgen
        and storage tables that are one of this region's elements (same index and bus: a
        region, an LV area or the MV net); every other row (e.g. the MV net's area loads)
        is untouched."""
        for table, index, bus, cols in (
                ("load", self.load_index, self.load_bus,
                 (("p_mw", self.load_p_mw), ("q_mvar", self.load_q_mvar))),
                ("sgen", self.sgen_index, self.sgen_bus, (("p_mw", self.sgen_p_mw),)),
                ("storage", self.storage_index, self.storage_bus,
                 (("p_mw", self.storage_p_mw),))):
            mine, rows = matching_rows(net, table, index, bus)
            for col, values in cols:
                j = net[table].columns.get_loc(col)
                net[table].iloc[rows, j] = values[frame, mine]

    def totals_mw(self) -> pd.DataFrame:
        """Per frame: the sum of load P, load Q, sgen P and storage P (MW / Mvar)."""
        return pd.DataFrame({"load_p_mw": self.load_p_mw.sum(axis=1),
                             "load_q_mvar": self.load_q_mvar.sum(axis=1),
                             "sgen_p_mw": self.sgen_p_mw.sum(axis=1),
                             "storage_p_mw": self.storage_p_mw.sum(axis=1)},
                            index=self.timestamps)


def simbench_date(day_type: str) -> _dt.date:
    """The 2016 date nearest to ``day_type``'s representative month and day
    (:data:`~flexcore.district.daytypes.REPRESENTATIVE_DATES`, earlier first on a tie) whose
    BDEW day type (:func:`~flexcore.district.daytypes.day_type_of`) is ``day_type``."""
    if day_type not in DAY_TYPES:
        raise ProfileError(f"unknown day type {day_type!r}; valid: {', '.join(DAY_TYPES)}")
    ref = REPRESENTATIVE_DATES[day_type].replace(year=SIMBENCH_YEAR)
    for dist in range(366):
        for cand in (ref - _dt.timedelta(days=dist), ref + _dt.timedelta(days=dist)):
            if cand.year == SIMBENCH_YEAR and day_type_of(cand) == day_type:
                return cand
    raise ProfileError(f"no date of {SIMBENCH_YEAR} has day type {day_type!r}")


def simbench_day(day_type: str | None, date: str | _dt.date | None) -> tuple[_dt.date, str]:
    """The SimBench date and its day type for a day type or a date (not both; default
    winter_workday); :class:`ProfileError` naming a bad one."""
    if day_type is not None and date is not None:
        raise ProfileError(f"give a day type or a date, not both ({day_type!r}, {date!r})")
    if date is None:
        d = simbench_date(day_type or "winter_workday")
        return d, day_type_of(d)
    try:
        d = date if isinstance(date, _dt.date) else _dt.date.fromisoformat(str(date))
    except ValueError:
        raise ProfileError(f"date {date!r} is not a date YYYY-MM-DD") from None
    if d.year != SIMBENCH_YEAR:
        raise ProfileError(f"date {date!r} is not in SimBench's profile year {SIMBENCH_YEAR}")
    return d, day_type_of(d)


@functools.lru_cache(maxsize=3)
def simbench_profiles(scenario: int = 0) -> dict[str, pd.DataFrame]:
    """SimBench's relative profiles of a scenario (0, 1, 2), all types (cached, ~3 s):
    ``{"load", "powerplants", "renewables", "storage"}`` as in ``net.profiles``."""
    import simbench

    return simbench.get_all_simbench_profiles(int(scenario))


def _scenario_of(source: str) -> int:
    import simbench

    code = source.split(":", 1)[1] if source.startswith("simbench:") else source
    try:
        return int(simbench.get_simbench_code_and_parameters(code)[1][5])
    except Exception:  # simbench raises bare Exceptions for bad codes
        raise ProfileError(f"{source!r} is not a SimBench code") from None


def _profiles_for(net: pp.pandapowerNet, source: str | None) -> dict[str, pd.DataFrame]:
    own = getattr(net, "profiles", None)
    if isinstance(own, dict) and isinstance(own.get("load"), pd.DataFrame) \
            and len(own["load"]):
        return own
    if source is not None and not str(source).endswith(".json"):
        return simbench_profiles(_scenario_of(str(source)))
    if not any("profile" in net[t] and net[t].profile.notna().any()
               for t in _TABLES if t in net):
        raise ProfileError(f"{source or 'grid'}: no element has a SimBench profile name "
                           "(column 'profile'); nothing to take a day of")
    return simbench_profiles(0)


def _absolute(net: pp.pandapowerNet, profiles: dict[str, pd.DataFrame], rows: np.ndarray,
              source: str | None) -> dict[tuple[str, str], np.ndarray]:
    """SimBench's absolute values of ``rows`` (quarter-hours of the year)."""
    import simbench

    light = pp.create_empty_network()
    for t in _TABLES:
        if t in net:
            light[t] = net[t]
    light.gen = light.gen.iloc[0:0]
    for t in _TABLES + ("gen",):   # no profile name: the static value (scaling 1)
        names = light[t].profile if "profile" in light[t] else pd.Series(None, light[t].index,
                                                                          dtype=object)
        light[t] = light[t].assign(profile=names.where(names.notna(), _STATIC).astype(str))
    sliced = {}
    for k in ("load", "powerplants", "renewables", "storage"):
        df = profiles.get(k)
        if df is None or not len(df):
            sliced[k] = pd.DataFrame({"time": np.zeros(len(rows))})
            continue
        if len(df) != QUARTER_HOURS:
            raise ProfileError(f"{source or 'grid'}: profiles {k!r} have {len(df)} rows, "
                               f"not SimBench's {QUARTER_HOURS}")
        sliced[k] = df.iloc[rows].reset_index(drop=True)
    ones = np.ones(len(rows))
    sliced["load"] = sliced["load"].assign(**{_STATIC + "_pload": ones, _STATIC + "_qload": ones})
    sliced["renewables"] = sliced["renewables"].assign(**{_STATIC: ones})
    sliced["storage"] = sliced["storage"].assign(**{_STATIC: ones})
    light.profiles = sliced
    try:
        vals = simbench.get_absolute_values(light, profiles_instead_of_study_cases=True)
    except ValueError as exc:   # missing profile names
        raise ProfileError(f"{source or 'grid'}: {exc}") from None
    return {k: v.to_numpy(float) for k, v in vals.items()}


def region_profiles(net: pp.pandapowerNet, *, day_type: str | None = None,
                    date: str | _dt.date | None = None, resolution_min: int = 15,
                    seed: int = 0, source: str | None = None, max_shift: int = 2,
                    noise: float = 0.05) -> RegionProfiles:
    """One day of SimBench's profiles for every load, sgen and storage of ``net``,
    diversified as the module doc says (``max_shift`` quarter-hours, ``noise``).

    The relative profiles come from ``net.profiles`` when SimBench left them there, else
    from SimBench's data of the scenario of ``source`` (``"simbench:1-MVLV-...-2-sw"``), else
    from scenario 0 when the elements carry SimBench profile names. Raises
    :class:`ProfileError` naming a bad day type, date, resolution or grid."""
    d, dtype = simbench_day(day_type, date)
    if resolution_min not in ALLOWED_RESOLUTIONS_MIN:
        raise ProfileError(f"resolution_min must be one of {ALLOWED_RESOLUTIONS_MIN}, got "
                           f"{resolution_min!r}")
    if max_shift < 0 or not 0 <= noise < 1:
        raise ProfileError(f"max_shift must be >= 0 and noise in [0, 1), got {max_shift!r}, "
                           f"{noise!r}")
    first = (d - _dt.date(SIMBENCH_YEAR, 1, 1)).days * _PER_DAY
    rows = np.arange(first - max_shift, first + _PER_DAY + max_shift) % QUARTER_HOURS
    vals = _absolute(net, _profiles_for(net, source), rows, source)
    named = {t: (net[t].profile.notna().to_numpy() if t in net and "profile" in net[t]
                 else np.zeros(len(net[t]) if t in net else 0, dtype=bool)) for t in _TABLES}
    day = slice(max_shift, max_shift + _PER_DAY)
    out: dict[str, np.ndarray] = {}
    for table in _TABLES:
        rng = np.random.default_rng([int(seed), _SEED_KEY[table]])
        p = vals[(table, "p_mw")]
        n = p.shape[1]
        if table == "sgen" or n == 0:
            out[table] = p[day]
            continue
        shift = rng.integers(-max_shift, max_shift + 1, n) * named[table]
        t = np.arange(_PER_DAY)[:, None] + max_shift - shift[None, :]
        cols = np.arange(n)[None, :]
        p_day = p[t, cols]
        if table == "storage":
            out[table] = p_day
            continue
        factor = np.maximum(0.0, 1.0 + noise * rng.standard_normal((_PER_DAY, n)))
        factor[:, ~named[table]] = 1.0
        div = p_day * factor
        want, got = p[day].sum(axis=0), div.sum(axis=0)
        scale = np.divide(want, got, out=np.ones(n), where=np.abs(got) > 1e-12)
        out["load"] = div * scale
        out["load_q"] = vals[("load", "q_mvar")][t, cols] * factor * scale
    step = resolution_min // 15
    times = pd.date_range(pd.Timestamp(d), periods=_PER_DAY, freq="15min")[::step]

    def res(a: np.ndarray) -> np.ndarray:
        return a.reshape(_PER_DAY // step, step, a.shape[1]).mean(axis=1)

    def index(table: str, col: str | None = None) -> np.ndarray:
        if table not in net:
            return np.zeros(0, dtype=np.int64)
        t = net[table]
        return (t.index if col is None else t[col]).to_numpy(np.int64)

    return RegionProfiles(
        timestamps=times, load_index=index("load"), load_p_mw=res(out["load"]),
        load_q_mvar=res(out.get("load_q", out["load"] * 0.0)), sgen_index=index("sgen"),
        sgen_p_mw=res(out["sgen"]), storage_index=index("storage"),
        storage_p_mw=res(out["storage"]), date=d, day_type=dtype,
        load_bus=index("load", "bus"), sgen_bus=index("sgen", "bus"),
        storage_bus=index("storage", "bus"))
