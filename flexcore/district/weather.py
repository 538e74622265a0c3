"""Weather of the district: the DWD test reference year 2010 shipped with demandlib.

Region 12 ("Oberrheingraben und unteres Neckartal", station Mannheim) covers Karlsruhe.
The file ``demandlib/vdi/resources_weather/TRY2010_12_Jahr.dat`` holds 8760 hourly rows;
hour ``HH`` (1..24, CET) is the mean over the hour *ending* at ``HH``. Used columns:
``t`` air temperature (degC), ``B`` direct and ``D`` diffuse irradiance on the horizontal
plane (W/m2), ``WG`` wind speed at 10 m (m/s).

The TRY is a typical year without a calendar year; it is mapped onto a non-leap year
(default 2010). Timing: the annual irradiance-weighted centroid of the hourly values
matches solar noon at Mannheim/Karlsruhe (~12:26 CET) only if the value labelled ``HH`` is
centred at ``HH:00`` CET (placing it at mid-hour ``HH-0.5`` gives 12:00, half an hour
early; the values behave like hourly means in true local solar time). We therefore centre
each hourly value at ``HH:00`` CET (:data:`TRY_CENTRE_OFFSET_H` after the hour-start index
of :func:`load_try`) and interpolate linearly to the middle of every step of the requested
resolution (irradiance clipped at zero). Nothing is downloaded.

Any date, of any year, has the weather of the same month, day and time of the TRY
(:func:`try_time`; 29 February of a leap year uses 28 February): calendar runs of real
dates read the TRY that way.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from flexcore.district.daytypes import REFERENCE_YEAR, same_day_in_reference_year
from flexcore.errors import FlexcosimError, InputFileError


class WeatherError(FlexcosimError, ValueError):
    """A TRY weather file or year that cannot be used (the message names which)."""


TRY_REGION = 12
LATITUDE = 49.0
LONGITUDE = 8.4
ALTITUDE_M = 115.0
TIMEZONE = "Etc/GMT-1"  # CET without daylight saving time
TRY_CENTRE_OFFSET_H = 1.0
"""Where an hourly TRY value is centred, in hours after its row's index (see above)."""


def try_file(region: int = TRY_REGION) -> Path:
    """Path of demandlib's shipped TRY 2010 file for a region (1..15)."""
    base = resources.files("demandlib") / "vdi" / "resources_weather"
    path = Path(str(base / f"TRY2010_{region:02d}_Jahr.dat"))
    if not path.is_file():
        raise InputFileError(f"TRY file for region {region} not found: {path}")
    return path


@functools.lru_cache(maxsize=4)
def load_try(region: int = TRY_REGION, *, year: int = REFERENCE_YEAR) -> pd.DataFrame:
    """Hourly TRY weather; row ``HH`` is indexed at ``HH-1`` h (naive CET), see module doc.

    Columns: ``temp_air_c``, ``bhi_w_m2`` (direct horizontal), ``dhi_w_m2`` (diffuse
    horizontal), ``ghi_w_m2`` (sum), ``wind_m_s``. Treat the result as read-only (cached).
    """
    if pd.Timestamp(year=year, month=12, day=31).dayofyear != 365:
        raise WeatherError(f"the TRY has 365 days: use a non-leap year, not {year}")
    path = try_file(region)
    lines = path.read_text(encoding="latin-1").splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("***")) + 1
    rows = np.array([line.split() for line in lines[start:] if line.strip()], dtype=float)
    if rows.shape[0] != 8760:
        raise WeatherError(f"{path}: expected 8760 hourly rows, found {rows.shape[0]}")
    month, day, hour = rows[:, 2].astype(int), rows[:, 3].astype(int), rows[:, 4].astype(int)
    index = pd.to_datetime(
        pd.DataFrame({"year": year, "month": month, "day": day})
    ) + pd.to_timedelta(hour - 1, unit="h")
    frame = pd.DataFrame(
        {
            "temp_air_c": rows[:, 8],
            "bhi_w_m2": rows[:, 13],
            "dhi_w_m2": rows[:, 14],
            "wind_m_s": rows[:, 7],
        },
        index=pd.DatetimeIndex(index, name="start"),
    )
    frame["ghi_w_m2"] = frame["bhi_w_m2"] + frame["dhi_w_m2"]
    if not frame.index.is_monotonic_increasing:
        raise WeatherError(f"{path}: rows are not in time order")
    return frame


@functools.lru_cache(maxsize=8)
def weather_at_resolution(
    resolution_min: int = 15, *, region: int = TRY_REGION, year: int = REFERENCE_YEAR
) -> pd.DataFrame:
    """TRY weather for the whole year at ``resolution_min``, indexed by step start.

    Each value is the linear interpolation of the hourly means (placed at mid-hour) at the
    middle of the step; the year wraps around at its ends. Read-only (cached).
    """
    hourly = load_try(region, year=year)
    n_hours = len(hourly)
    x_h = np.arange(n_hours) + TRY_CENTRE_OFFSET_H  # hours since 1 Jan 00:00
    steps = n_hours * 60 // resolution_min
    x_s = (np.arange(steps) + 0.5) * resolution_min / 60.0
    out = {}
    for col in hourly.columns:
        y = hourly[col].to_numpy()
        # periodic extension so the first and last half hour interpolate sensibly
        xp = np.concatenate([[x_h[-1] - n_hours], x_h, [x_h[0] + n_hours]])
        fp = np.concatenate([[y[-1]], y, [y[0]]])
        out[col] = np.interp(x_s, xp, fp)
    for col in ("bhi_w_m2", "dhi_w_m2", "ghi_w_m2"):
        out[col] = np.maximum(out[col], 0.0)
    index = pd.date_range(hourly.index[0], periods=steps, freq=f"{resolution_min}min", name="start")
    return pd.DataFrame(out, index=index)


def try_time(start: pd.Timestamp) -> pd.Timestamp:
    """The TRY time of any timestamp: the same month, day and time of the reference year
    (29 February -> 28 February)."""
    start = pd.Timestamp(start)
    return pd.Timestamp(same_day_in_reference_year(start.date())) + (
        start - start.normalize())


@functools.lru_cache(maxsize=65536)
def temperature_c(start: pd.Timestamp, duration_h: float = 0.25) -> float:
    """Mean outdoor temperature over ``[start, start + duration_h)`` (15-min TRY data) of
    the TRY's same month, day and time (:func:`try_time`)."""
    start = try_time(start)
    wx = weather_at_resolution(15, year=start.year)
    k = _step_index(start, 15)
    n = max(1, int(round(duration_h * 4)))
    return float(wx["temp_air_c"].to_numpy()[k:k + n].mean())


def _step_index(start: pd.Timestamp, resolution_min: int) -> int:
    start = pd.Timestamp(start)
    year0 = pd.Timestamp(year=start.year, month=1, day=1)
    minutes = (start - year0) / pd.Timedelta(minutes=1)
    if minutes % resolution_min:
        raise ValueError(f"{start} is not on the {resolution_min}-min grid")
    return int(minutes // resolution_min)
