"""Electric load and PV profiles of the buildings, for a whole year and for frames.

Sign convention (everywhere in flexcosim): injection into the grid is POSITIVE. The arrays
of :class:`ProfileFrames` hold magnitudes: ``load_p_mw`` >= 0 is consumption, ``pv_p_mw``
>= 0 generation, so a building's net injection is ``pv_p_mw - load_p_mw``;
``load_q_mvar`` >= 0 is inductive reactive consumption (pandapower's load convention).

Load (BDEW standard load profiles from demandlib, 15 min, year 2010, Baden-Wuerttemberg
holidays as Sundays; see :data:`SLP_BY_TYPE`):

- dwellings (single_house, duplex, townhouse, apartment_tower): ``h0_dyn``, the H0
  household profile with the BDEW dynamisation factor (winter peak, summer trough);
- school: ``g1`` (commerce on workdays 8-18 h, ~0 at weekends);
- community_centre: ``g2`` (commerce with most consumption in the evening: clubs,
  meetings, events are evening uses);
- shop: ``g4`` (shops / hairdressers).

Each profile is scaled so the building's annual energy equals ``annual_kwh``. Individual
variation (reproducible, seeded by ``(seed, building_id)``): a random time shift of
-1 h..+1 h in 15-min steps (circular over the year) and multiplicative log-normal AR(1)
noise (sigma 0.25, lag-1 correlation 0.9 per 15 min); the year is renormalised afterwards,
so the annual energy is exact. Reactive power: power factor by type
(:data:`POWER_FACTOR_BY_TYPE`, inductive).

PV (pvlib, Karlsruhe 49.0 N 8.4 E, TRY 2010 weather of region 12): solar position at the
middle of every 15-min step, DNI = direct horizontal / cos(zenith) (zenith < 87 deg),
plane-of-array irradiance by Hay-Davies (albedo 0.2), Faiman cell temperature,
PVWatts DC (gamma -0.37 %/K) with 5 % system losses, PVWatts inverter (96 %). Size:
``kWp = roof_area_m2 * usable share * kWp per m2`` with pitched roofs 40-60 % usable
(drawn per building) at 0.20 kWp/m2, flat roofs 50 % at 0.15 kWp/m2 (rows with spacing).
Orientation per building (seeded): pitched roofs azimuth uniform 120-240 deg (the better roof
side), tilt 25-45 deg; flat roofs south 180 +- 20 deg at 15 deg tilt; quantised to 10 deg
azimuth and 5 deg tilt so the PV year is computed once per orientation (cached). Which
buildings have PV: a boolean column ``has_pv`` if present, else a seeded random share
``pv_penetration``.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flexcore.district.daytypes import REFERENCE_YEAR, Frame, holidays_bw
from flexcore.district.weather import (
    ALTITUDE_M,
    LATITUDE,
    LONGITUDE,
    TIMEZONE,
    weather_at_resolution,
)

STEPS_PER_HOUR = 4
STEP_H = 0.25

SLP_BY_TYPE: dict[str, str] = {
    "single_house": "h0_dyn",
    "duplex": "h0_dyn",
    "townhouse": "h0_dyn",
    "apartment_tower": "h0_dyn",
    "school": "g1",
    "community_centre": "g2",
    "shop": "g4",
}
POWER_FACTOR_BY_TYPE: dict[str, float] = {
    "single_house": 0.97,
    "duplex": 0.97,
    "townhouse": 0.97,
    "apartment_tower": 0.97,
    "school": 0.95,
    "community_centre": 0.95,
    "shop": 0.93,
}
FLAT_ROOF_TYPES = frozenset({"apartment_tower", "school", "community_centre", "shop"})
SHIFT_MAX_STEPS = 4          # +-1 h at 15 min
NOISE_SIGMA = 0.25
NOISE_RHO = 0.9
KWP_PER_M2_PITCHED = 0.20
KWP_PER_M2_FLAT = 0.15
USABLE_PITCHED = (0.4, 0.6)
USABLE_FLAT = 0.5
PV_SYSTEM_LOSS = 0.05


def building_rng(seed: int, building_id: str, salt: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, building id, salt), not on table order."""
    return np.random.default_rng([int(seed), zlib.crc32(str(building_id).encode()), int(salt)])


# --------------------------------------------------------------------------- load
@functools.lru_cache(maxsize=4)
def slp_year(year: int = REFERENCE_YEAR) -> pd.DataFrame:
    """All demandlib BDEW profiles of a year at 15 min, each normalised to a sum of 1."""
    from demandlib import bdew  # local import: demandlib pulls in its data on first use

    with warnings.catch_warnings():  # ElecSlp sets warnings.simplefilter("error")
        slp = bdew.ElecSlp(year=year, holidays=holidays_bw(year))
        frame = slp.get_profiles().copy()
    return frame / frame.sum(axis=0)


def _slp_array(name: str, year: int) -> np.ndarray:
    return _slp_arrays(year)[name]


@functools.lru_cache(maxsize=4)
def _slp_arrays(year: int) -> dict[str, np.ndarray]:
    """:func:`slp_year`'s columns as read-only arrays, kept on disk like the PV years
    (:func:`cache_dir`, ``slp/``, one ``.npz`` per year, the same bits) under a key of the
    year and :func:`_pv_inputs_key` (this module's code, demandlib's version, ...): later
    processes skip demandlib's ~0.5-1 s (the key also covers the holidays' module). A missing
    or unreadable file is computed again."""
    root = cache_dir()
    path = None
    if root is not None:
        days = hashlib.sha256(Path(holidays_bw.__code__.co_filename).read_bytes()).hexdigest()
        key = hashlib.sha256(repr(("slp", int(year), days, _pv_inputs_key())).encode()
                             ).hexdigest()[:32]
        path = root / "slp" / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                names, values = z["names"], z["values"]
            if values.dtype == np.float64 and values.ndim == 2 and len(names) == values.shape[1]:
                return _columns([str(n) for n in names], values)
        except (OSError, ValueError, EOFError, KeyError):
            pass
    frame = slp_year(year)
    names = [str(c) for c in frame.columns]
    values = np.column_stack([frame[c].to_numpy(dtype=float) for c in frame.columns])
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, names=np.array(names), values=values)
            os.replace(tmp, path)  # atomic: concurrent runs never read half a file
        except OSError:
            pass  # a read-only home: no disk cache
    return _columns(names, values)


def _columns(names: list[str], values: np.ndarray) -> dict[str, np.ndarray]:
    """{name: read-only contiguous column} of a (steps x names) array."""
    out = {}
    for k, name in enumerate(names):
        out[name] = np.ascontiguousarray(values[:, k])
        out[name].flags.writeable = False
    return out


#: normalised load shapes by (building id, type, seed, year), see :func:`_building_shapes`
_SHAPES: dict[tuple[str, str, int, int], np.ndarray] = {}
_SHAPES_KEPT = 4096


def _ar1(white: np.ndarray) -> np.ndarray:
    """AR(1) filter ``y[t] = white[t] + NOISE_RHO * y[t-1]`` down the rows of ``white``
    (steps x series), vectorised over the series: the recursion that
    ``scipy.signal.lfilter([1], [1, -NOISE_RHO], x)`` evaluates, operation for operation
    (the same bits), without importing scipy.signal (~1-2 s per process)."""
    out = np.empty_like(white)
    prev = np.zeros(white.shape[1:])
    for t in range(white.shape[0]):
        prev = NOISE_RHO * prev + white[t]
        out[t] = prev
    return out


def _building_shapes(keys: list[tuple[str, str, int, int]]) -> list[np.ndarray]:
    """Normalised (sum 1) yearly 15-min load shapes, one per ``(building id, type, seed,
    year)``, with each building's variation; computed together for the buildings not seen
    before (one AR(1) pass for all of them), cached, read-only."""
    for building_id, btype, _, _ in keys:
        if btype not in SLP_BY_TYPE:
            raise ValueError(
                f"building {building_id}: unknown type {btype!r}; known {sorted(SLP_BY_TYPE)}")
    new = [k for k in dict.fromkeys(keys) if k not in _SHAPES]
    if new:
        shifts, whites = [], []
        for building_id, btype, seed, year in new:
            n = len(_slp_array(SLP_BY_TYPE[btype], year))
            rng = building_rng(seed, building_id, salt=1)
            shifts.append(int(rng.integers(-SHIFT_MAX_STEPS, SHIFT_MAX_STEPS + 1)))
            whites.append(rng.normal(0.0, NOISE_SIGMA * math.sqrt(1 - NOISE_RHO**2), size=n))
        ar = _ar1(np.stack(whites, axis=1))
        if len(_SHAPES) + len(new) > _SHAPES_KEPT:
            _SHAPES.clear()
        for j, (key, shift) in enumerate(zip(new, shifts)):
            base = _slp_array(SLP_BY_TYPE[key[1]], key[3])
            shape = np.roll(base, shift) * np.exp(ar[:, j] - 0.5 * NOISE_SIGMA**2)
            shape /= shape.sum()
            shape.flags.writeable = False
            _SHAPES[key] = shape
    return [_SHAPES[k] for k in keys]


def _building_shape(building_id: str, btype: str, seed: int, year: int) -> np.ndarray:
    """Normalised (sum 1) yearly 15-min load shape of one building with its variation."""
    return _building_shapes([(building_id, btype, int(seed), int(year))])[0]


# --------------------------------------------------------------------------- PV
@functools.lru_cache(maxsize=4)
def _solar_inputs(year: int) -> dict[str, np.ndarray]:
    import pvlib

    wx = weather_at_resolution(15, year=year)
    mid = (wx.index + pd.Timedelta(minutes=7.5)).tz_localize(TIMEZONE)
    sp = pvlib.solarposition.get_solarposition(mid, LATITUDE, LONGITUDE, altitude=ALTITUDE_M)
    zen = sp["apparent_zenith"].to_numpy()
    cosz = np.cos(np.radians(zen))
    dni = np.where(zen < 87.0, wx["bhi_w_m2"].to_numpy() / np.maximum(cosz, 1e-3), 0.0)
    return {
        "zenith": zen,
        "azimuth": sp["azimuth"].to_numpy(),
        "dni": dni,
        "ghi": wx["ghi_w_m2"].to_numpy(),
        "dhi": wx["dhi_w_m2"].to_numpy(),
        "dni_extra": pvlib.irradiance.get_extra_radiation(mid).to_numpy(),
        "temp_air": wx["temp_air_c"].to_numpy(),
        "wind": wx["wind_m_s"].to_numpy(),
    }


#: bump when the PV year changes in a way the cache key below does not see
PV_CACHE_FORMAT = 1


def cache_dir() -> Path | None:
    """Folder of flexcosim's disk cache: ``$FLEXCOSIM_CACHE_DIR``, default
    ``~/.cache/flexcosim``; None (no disk cache) if the variable is ``off``."""
    root = os.environ.get("FLEXCOSIM_CACHE_DIR", "")
    if root.strip().lower() in ("off", "0", "no", "none"):
        return None
    return Path(root) if root else Path.home() / ".cache" / "flexcosim"


@functools.lru_cache(maxsize=1)
def _pv_inputs_key() -> str:
    """Hash of everything a PV year depends on besides its arguments: this module's and
    the weather module's code, the TRY weather file and the versions of the libraries that
    compute it."""
    from importlib.metadata import version

    from flexcore.district import weather

    h = hashlib.sha256(str(PV_CACHE_FORMAT).encode())
    for path in (Path(__file__), Path(weather.__file__), weather.try_file()):
        h.update(path.read_bytes())
    for pkg in ("pvlib", "numpy", "pandas", "demandlib"):
        h.update(f"{pkg}={version(pkg)}".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def pv_year_per_kwp(tilt_deg: float, azimuth_deg: float, year: int = REFERENCE_YEAR) -> np.ndarray:
    """AC output (kW per kWp, mean over each 15-min step) for a whole year; read-only.

    Kept on disk (:func:`cache_dir`, ``pv/``, one ``.npy`` per orientation and year, the
    same bits) under a key of the arguments and :func:`_pv_inputs_key`, so that the
    processes of later runs and sweeps skip pvlib (its import and the solar position of
    the year take ~2-3 s); a missing or unreadable file is computed again."""
    root = cache_dir()
    path = None
    if root is not None:
        key = hashlib.sha256(repr((float(tilt_deg), float(azimuth_deg), int(year),
                                   _pv_inputs_key())).encode()).hexdigest()[:32]
        path = root / "pv" / f"{key}.npy"
        try:
            out = np.load(path, allow_pickle=False)
            if out.dtype == np.float64 and out.ndim == 1:
                out.flags.writeable = False
                return out
        except (OSError, ValueError, EOFError):
            pass
    out = _pv_year_computed(tilt_deg, azimuth_deg, year)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, out, allow_pickle=False)
            os.replace(tmp, path)  # atomic: concurrent runs never read half a file
        except OSError:
            pass  # a read-only home: no disk cache
    return out


def _pv_year_computed(tilt_deg: float, azimuth_deg: float, year: int) -> np.ndarray:
    """:func:`pv_year_per_kwp` computed with pvlib."""
    import pvlib

    s = _solar_inputs(year)
    poa = pvlib.irradiance.get_total_irradiance(
        tilt_deg, azimuth_deg, s["zenith"], s["azimuth"], s["dni"], s["ghi"], s["dhi"],
        dni_extra=s["dni_extra"], albedo=0.2, model="haydavies",
    )["poa_global"]
    poa = np.nan_to_num(np.asarray(poa, dtype=float), nan=0.0)
    poa = np.where(s["zenith"] < 90.0, np.maximum(poa, 0.0), 0.0)
    t_cell = pvlib.temperature.faiman(poa, s["temp_air"], s["wind"])
    pdc = pvlib.pvsystem.pvwatts_dc(poa, t_cell, 1.0, -0.0037) * (1 - PV_SYSTEM_LOSS)
    pac = np.asarray(pvlib.inverter.pvwatts(pdc, 1.0, eta_inv_nom=0.96), dtype=float)
    out = np.clip(np.nan_to_num(pac, nan=0.0), 0.0, None)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class PVSystem:
    """PV system of one building (kwp = 0: none)."""

    kwp: float
    tilt_deg: float
    azimuth_deg: float


def pv_system_for(row: pd.Series | dict, *, seed: int, has_pv: bool) -> PVSystem:
    """Size and orient the PV system of one building (see module docstring)."""
    rng = building_rng(seed, row["building_id"], salt=2)
    flat = row["type"] in FLAT_ROOF_TYPES
    if flat:
        share, density = USABLE_FLAT, KWP_PER_M2_FLAT
        az, tilt = 180.0 + rng.uniform(-20.0, 20.0), 15.0
    else:
        share, density = rng.uniform(*USABLE_PITCHED), KWP_PER_M2_PITCHED
        az, tilt = rng.uniform(120.0, 240.0), rng.uniform(25.0, 45.0)
    kwp = float(row["roof_area_m2"]) * share * density if has_pv else 0.0
    return PVSystem(round(kwp, 2), float(5 * round(tilt / 5)), float(10 * round(az / 10)) % 360)


@functools.lru_cache(maxsize=65536)
def _step_slice(year: int, start: pd.Timestamp, duration_h: float) -> slice:
    """15-min steps of the year covered by a frame."""
    if start.year != year:
        raise ValueError(f"frame start {start} is outside the profile year {year}")
    minutes = (start - pd.Timestamp(year=year, month=1, day=1)) / pd.Timedelta(minutes=1)
    if minutes % 15:
        raise ValueError(f"frame start {start} is not on the 15-min grid")
    k = int(minutes // 15)
    return slice(k, k + max(1, int(round(duration_h * STEPS_PER_HOUR))))


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ProfileFrames:
    """Profiles of all buildings for a list of frames; arrays are (frames, buildings), MW.

    ``load_p_mw`` consumption (>= 0), ``load_q_mvar`` inductive reactive consumption,
    ``pv_p_mw`` PV generation (>= 0); net injection = ``pv_p_mw - load_p_mw``.
    """

    building_ids: tuple[str, ...]
    frames: tuple[Frame, ...]
    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    pv_p_mw: np.ndarray

    @property
    def net_injection_mw(self) -> np.ndarray:
        return self.pv_p_mw - self.load_p_mw


@dataclass
class BuildingProfiles:
    """Yearly 15-min load and PV profiles of a building table (build with :meth:`from_table`)."""

    building_ids: tuple[str, ...]
    types: tuple[str, ...]
    annual_kwh: np.ndarray
    pv: tuple[PVSystem, ...]
    year: int
    seed: int
    _load_kw: np.ndarray = field(repr=False)   # (buildings, steps) mean kW per step
    _pv_kw: np.ndarray = field(repr=False)     # (buildings, steps)
    _tan_phi: np.ndarray = field(repr=False)   # (buildings,)

    @classmethod
    def from_table(
        cls,
        table: pd.DataFrame,
        *,
        seed: int = 0,
        pv_penetration: float = 1.0,
        year: int = REFERENCE_YEAR,
    ) -> BuildingProfiles:
        """Compute the year for every building of ``table``.

        Columns of ``table`` as in flexcore.district.buildings.

        ``pv_penetration`` (0..1) is the seeded share of buildings with PV; a boolean
        column ``has_pv`` in the table overrides it.
        """
        required = ("building_id", "type", "annual_kwh", "roof_area_m2")
        missing = [c for c in required if c not in table.columns]
        if missing:
            raise ValueError(f"building table lacks column(s) {missing}")
        if not 0.0 <= pv_penetration <= 1.0:
            raise ValueError(f"pv_penetration must be in [0, 1], got {pv_penetration}")
        ids = tuple(str(b) for b in table["building_id"])
        if len(set(ids)) != len(ids):
            raise ValueError("building_id values are not unique")
        types = tuple(str(t) for t in table["type"])
        annual = table["annual_kwh"].to_numpy(dtype=float)
        if "has_pv" in table.columns:
            has_pv = table["has_pv"].to_numpy(dtype=bool)
        else:
            order = np.random.default_rng([int(seed), 3]).permutation(len(ids))
            has_pv = np.zeros(len(ids), bool)
            has_pv[order[: int(round(pv_penetration * len(ids)))]] = True
        steps = len(next(iter(_slp_arrays(year).values())))
        load = np.empty((len(ids), steps))
        pv_kw = np.zeros((len(ids), steps))
        systems = []
        shapes = _building_shapes([(b, t, int(seed), int(year)) for b, t in zip(ids, types)])
        for k, row in enumerate(table.to_dict("records")):
            shape = shapes[k]
            load[k] = shape * (annual[k] * STEPS_PER_HOUR)  # kWh per step -> mean kW
            system = pv_system_for(row, seed=seed, has_pv=bool(has_pv[k]))
            systems.append(system)
            if system.kwp > 0:
                pv_kw[k] = system.kwp * pv_year_per_kwp(system.tilt_deg, system.azimuth_deg, year)
        tan_phi = np.array([math.tan(math.acos(POWER_FACTOR_BY_TYPE[t])) for t in types])
        return cls(ids, types, annual, tuple(systems), year, int(seed), load, pv_kw, tan_phi)

    # ---------------------------------------------------------------- queries
    @property
    def pv_kwp(self) -> np.ndarray:
        return np.array([s.kwp for s in self.pv])

    def annual_load_kwh(self) -> np.ndarray:
        """Annual consumption per building (kWh), from the 15-min year."""
        return self._load_kw.sum(axis=1) * STEP_H

    def annual_pv_kwh(self) -> np.ndarray:
        """Annual PV generation per building (kWh)."""
        return self._pv_kw.sum(axis=1) * STEP_H

    def _steps(self, frame: Frame, start: pd.Timestamp | None = None) -> slice:
        """15-min steps of a frame from ``start`` (default ``frame.start``; calendar frames
        read load at ``frame.load_start`` and PV at ``frame.weather_start``)."""
        start = frame.start if start is None else start
        sl = _step_slice(self.year, pd.Timestamp(start), float(frame.duration_h))
        if sl.stop > self._load_kw.shape[1]:
            raise ValueError(f"frame {frame.index} runs past the end of {self.year}")
        return sl

    def index_of(self, building_id: str) -> int:
        try:
            return self._index[building_id]
        except AttributeError:
            self._index = {b: k for k, b in enumerate(self.building_ids)}
            return self._index[building_id]

    #: frames whose means :meth:`_frame_means` keeps (the units ask about the current one)
    _MEANS_KEPT = 16

    def _frame_means(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """(load kW, PV kW) means over the frame for every building, computed once per frame
        (the same numbers as the mean of one building's row: each row is contiguous)."""
        key = (frame.load_start, frame.weather_start, frame.duration_h)
        cache = self.__dict__.setdefault("_means", {})
        hit = cache.get(key)
        if hit is None:
            hit = (self._load_kw[:, self._steps(frame, frame.load_start)].mean(axis=1),
                   self._pv_kw[:, self._steps(frame, frame.weather_start)].mean(axis=1))
            if len(cache) >= self._MEANS_KEPT:
                cache.clear()
            cache[key] = hit
        return hit

    def frame_means_kw(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """(load kW, PV kW) means over ``frame`` for every building (read-only arrays in the
        order of ``building_ids``; :meth:`load_mw` is one entry / 1000)."""
        return self._frame_means(frame)

    def load_mw(self, building_id: str, frame: Frame) -> float:
        """Mean consumption of one building over a frame (MW, >= 0)."""
        return float(self._frame_means(frame)[0][self.index_of(building_id)]) / 1000.0

    def pv_mw(self, building_id: str, frame: Frame) -> float:
        """Mean PV generation of one building over a frame (MW, >= 0)."""
        return float(self._frame_means(frame)[1][self.index_of(building_id)]) / 1000.0

    def for_frames(self, frames: list[Frame] | tuple[Frame, ...]) -> ProfileFrames:
        """Frame means of all buildings as (frames, buildings) arrays in MW / Mvar."""
        load = np.empty((len(frames), len(self.building_ids)))
        pv = np.empty_like(load)
        for i, frame in enumerate(frames):
            load[i] = self._load_kw[:, self._steps(frame, frame.load_start)].mean(axis=1)
            pv[i] = self._pv_kw[:, self._steps(frame, frame.weather_start)].mean(axis=1)
        load /= 1000.0
        pv /= 1000.0
        return ProfileFrames(
            building_ids=self.building_ids,
            frames=tuple(frames),
            load_p_mw=load,
            load_q_mvar=load * self._tan_phi[None, :],
            pv_p_mw=pv,
        )
