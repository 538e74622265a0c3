"""The Bergwald-like district: a synthetic, street-like building table and street graph.

The original Bergwald model (KIT, generated from OpenStreetMap) is not public. This module
builds a deterministic stand-in with the same building mix (241 buildings: single houses,
duplexes, townhouses, apartment towers, a school, a community centre, shops) laid out along
a small street network: a main road with shops and apartment towers, residential side
streets and a ring road. The shipped files ``data/bergwald_buildings.csv`` and
``data/bergwald_streets.csv`` are the output of :func:`make_bergwald` with its defaults;
a test checks that it still reproduces them.

Figures per building type (:data:`ARCHETYPES`) and their sources:

- Annual electricity per dwelling: Stromspiegel fuer Deutschland 2023 (co2online / BMWK),
  households in houses with 3-4 persons ~3,600-4,500 kWh/a, in flats with 1-3 persons
  ~1,500-2,800 kWh/a (without electric hot water or heating).
- Non-residential: VDI 3807-2 (2014) and the Bekanntmachung der Regeln fuer
  Energieverbrauchswerte im Nichtwohngebaeudebestand (BMWi/BMUB 2015) electricity
  benchmarks: schools ~10-15 kWh/(m2 a), community centres ("Gemeinschaftshaeuser")
  ~20-30 kWh/(m2 a), small retail/food shops ~80-150 kWh/(m2 a).
- Floor areas: German averages (Destatis, Mikrozensus 2022): single-family house ~140 m2,
  duplex half ~120 m2 per dwelling, terraced house ~110 m2, flat ~70 m2.
- Roof area: footprint x 1.15 for pitched roofs (35 degrees), flat roofs on towers,
  school, community centre and shops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from flexcore.errors import FlexcosimError, InputFileError


class BuildingTableError(FlexcosimError, ValueError):
    """A malformed building or street table (the message names the file and the column)."""


BUILDING_TYPES = (
    "single_house",
    "duplex",
    "townhouse",
    "apartment_tower",
    "school",
    "community_centre",
    "shop",
)
RESIDENTIAL_TYPES = ("single_house", "duplex", "townhouse", "apartment_tower")
TABLE_COLUMNS = (
    "building_id", "x_m", "y_m", "type", "dwellings", "floor_area_m2", "roof_area_m2",
    "annual_kwh", "street",
)
STREET_COLUMNS = ("street", "x1_m", "y1_m", "x2_m", "y2_m")


@dataclass(frozen=True)
class Archetype:
    """Typical figures of one building type (ranges are sampled uniformly, seeded)."""

    dwellings: tuple[int, int]
    floor_area_per_dwelling_m2: tuple[float, float]  # non-residential: whole building
    storeys: int
    kwh_per_dwelling: tuple[float, float]  # non-residential: kWh per m2 floor area
    flat_roof: bool
    plot_width_m: float
    setback_m: float


ARCHETYPES: dict[str, Archetype] = {
    "single_house": Archetype((1, 1), (120, 170), 2, (3600, 4800), False, 22.0, 14.0),
    "duplex": Archetype((2, 2), (100, 130), 2, (3200, 4200), False, 19.0, 13.0),
    "townhouse": Archetype((1, 1), (95, 125), 2, (3000, 3900), False, 7.5, 11.0),
    "apartment_tower": Archetype((12, 30), (55, 85), 6, (1500, 2600), True, 38.0, 20.0),
    "school": Archetype((0, 0), (3500, 4500), 2, (10, 15), True, 0.0, 40.0),
    "community_centre": Archetype((0, 0), (700, 900), 1, (20, 30), True, 0.0, 22.0),
    "shop": Archetype((0, 0), (250, 600), 1, (80, 150), True, 20.0, 14.0),
}

#: Building counts of the shipped district (241 in total).
BERGWALD_MIX = {
    "single_house": 138,
    "duplex": 42,
    "townhouse": 36,
    "apartment_tower": 12,
    "school": 1,
    "community_centre": 1,
    "shop": 11,
}


def _streets() -> list[tuple[str, str, list[tuple[float, float]]]]:
    """(name, building type along it, polyline) of the synthetic street network.

    A west-east main road (shops and apartment towers), six residential side streets to
    the north and south, two townhouse lanes, a duplex crescent and a northern ring road
    that closes loops (so that the street graph is meshed, as real ones are).
    """
    main = [(0.0, 0.0), (120.0, 0.0), (240.0, 5.0), (360.0, 5.0), (480.0, 0.0), (600.0, -5.0),
            (720.0, -5.0)]
    return [
        ("Hauptstrasse", "main", main),
        ("Ahornweg", "single_house", [(120.0, 0.0), (115.0, 110.0), (110.0, 230.0)]),
        ("Birkenweg", "single_house", [(360.0, 5.0), (365.0, 120.0), (370.0, 235.0)]),
        ("Eichenweg", "single_house", [(600.0, -5.0), (605.0, 115.0), (600.0, 230.0)]),
        ("Ringstrasse", "single_house", [(110.0, 230.0), (240.0, 240.0), (370.0, 235.0),
                                         (480.0, 238.0), (600.0, 230.0), (720.0, 232.0)]),
        ("Tannenweg", "single_house", [(720.0, -5.0), (715.0, 115.0), (720.0, 232.0)]),
        ("Lindenweg", "single_house", [(240.0, 5.0), (245.0, -110.0), (250.0, -215.0)]),
        ("Buchenweg", "duplex", [(480.0, 0.0), (470.0, -105.0), (480.0, -210.0)]),
        ("Am Hang", "duplex", [(250.0, -215.0), (365.0, -225.0), (480.0, -210.0)]),
        ("Kastanienhof", "townhouse", [(120.0, 0.0), (125.0, -90.0), (130.0, -170.0)]),
        ("Erlenhof", "townhouse", [(720.0, -5.0), (725.0, -95.0), (720.0, -180.0)]),
        ("Schulweg", "public", [(240.0, 5.0), (240.0, 120.0), (240.0, 240.0)]),
    ]


def _walk(polyline: list[tuple[float, float]], spacing: float, start: float):
    """Points (x, y, unit tangent) every ``spacing`` metres along a polyline."""
    pts = np.asarray(polyline, float)
    seg = np.diff(pts, axis=0)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    total = seg_len.sum()
    s = start
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    while s < total - spacing / 3:
        k = int(np.searchsorted(cum, s, side="right") - 1)
        k = min(k, len(seg) - 1)
        t = (s - cum[k]) / seg_len[k]
        p = pts[k] + t * seg[k]
        yield p[0], p[1], seg[k] / seg_len[k]
        s += spacing


def make_bergwald(*, seed: int = 7, mix: dict[str, int] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the synthetic building table and street table (deterministic for a seed)."""
    mix = dict(BERGWALD_MIX if mix is None else mix)
    rng = np.random.default_rng(seed)
    plots: dict[str, list[tuple[float, float, str, float]]] = {t: [] for t in BUILDING_TYPES}
    street_rows = []
    for name, kind, line in _streets():
        for (x1, y1), (x2, y2) in zip(line[:-1], line[1:]):
            street_rows.append((name, x1, y1, x2, y2))
        if kind == "main":
            # north side: apartment towers then shops; south side: shops and towers
            for side in (+1, -1):
                for k, (x, y, tan) in enumerate(_walk(line, 30.0, 15.0)):
                    normal = np.array([-tan[1], tan[0]]) * side
                    kind_here = "shop" if (k + (side > 0)) % 2 else "apartment_tower"
                    setback = ARCHETYPES[kind_here].setback_m
                    plots[kind_here].append((x + normal[0] * setback, y + normal[1] * setback,
                                             name, 0.0))
        elif kind == "public":
            plots["school"].append((280.0, 90.0, name, 0.0))
            plots["community_centre"].append((205.0, 150.0, name, 0.0))
            for x, y, _tan in _walk(line, 24.0, 200.0):
                plots["single_house"].append((x - 14.0, y, name, 0.0))
        else:
            width = ARCHETYPES[kind].plot_width_m
            setback = ARCHETYPES[kind].setback_m
            for side in (+1, -1):
                for x, y, tan in _walk(line, width, width / 2 + (0 if side > 0 else width / 3)):
                    normal = np.array([-tan[1], tan[0]]) * side
                    plots[kind].append((x + normal[0] * setback, y + normal[1] * setback,
                                        name, 0.0))
    rows = []
    for btype in BUILDING_TYPES:
        want = mix.get(btype, 0)
        have = plots[btype]
        if len(have) < want:
            raise BuildingTableError(
                f"street layout has {len(have)} plots for {btype}, need {want}")
        # keep a seeded, spatially spread subset (every k-th plot, then random fill)
        idx = np.sort(rng.choice(len(have), size=want, replace=False))
        for k in idx:
            x, y, street, _ = have[k]
            rows.append(_building(btype, x, y, street, rng))
    table = pd.DataFrame(rows, columns=[c for c in TABLE_COLUMNS if c != "building_id"])
    table.insert(0, "building_id", [f"B{k + 1:03d}" for k in range(len(table))])
    streets = pd.DataFrame(street_rows, columns=list(STREET_COLUMNS))
    return table, streets


def _building(btype: str, x: float, y: float, street: str, rng) -> tuple:
    a = ARCHETYPES[btype]
    dwellings = int(rng.integers(a.dwellings[0], a.dwellings[1] + 1))
    area_each = float(rng.uniform(*a.floor_area_per_dwelling_m2))
    if btype in RESIDENTIAL_TYPES:
        floor = area_each * dwellings
        annual = sum(float(rng.uniform(*a.kwh_per_dwelling)) for _ in range(dwellings))
        if btype == "apartment_tower":  # lifts, stairwell lighting, heating pumps
            annual += 3.0 * floor
    else:
        floor = area_each
        annual = floor * float(rng.uniform(*a.kwh_per_dwelling))
    footprint = floor / a.storeys
    roof = footprint * (1.0 if a.flat_roof else 1.15)
    return (round(x + rng.normal(0, 1.0), 1), round(y + rng.normal(0, 1.0), 1), btype,
            dwellings, round(floor, 1), round(roof, 1), round(annual, 0), street)


# ----------------------------------------------------------------------------- I/O
def data_path(name: str) -> Path:
    return Path(str(resources.files("flexcore") / "data" / name))


def load_building_table(path: str | Path | None = None) -> pd.DataFrame:
    """Read a building table (CSV; the shipped Bergwald table by default), validated."""
    path = data_path("bergwald_buildings.csv") if path is None else Path(path)
    if not path.is_file():
        raise InputFileError(f"building table not found: {path}")
    if path.suffix.lower() in (".geojson", ".json"):
        table = _read_geojson(path)
    else:
        table = _read_csv(path, dtype={"building_id": str, "street": str})
    return validate_building_table(table, source=str(path))


def load_street_table(path: str | Path | None = None) -> pd.DataFrame:
    path = data_path("bergwald_streets.csv") if path is None else Path(path)
    if not path.is_file():
        raise InputFileError(f"street table not found: {path}")
    streets = _read_csv(path)
    missing = [c for c in STREET_COLUMNS if c not in streets.columns]
    if missing:
        raise BuildingTableError(f"{path}: street table lacks column(s) {missing}")
    return streets


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BuildingTableError(f"{path}: not a readable CSV table ({exc})") from None


def _read_geojson(path: Path) -> pd.DataFrame:
    """GeoJSON points with the table's properties; lon/lat are projected to metres."""
    import json

    try:
        features = json.loads(path.read_text()).get("features", [])
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as exc:
        raise BuildingTableError(f"{path}: not a GeoJSON FeatureCollection ({exc})") from None
    rows = []
    for k, f in enumerate(features):
        try:
            lon, lat = f["geometry"]["coordinates"][:2]
        except (KeyError, TypeError, ValueError):
            raise BuildingTableError(f"{path}: feature {k} has no point coordinates") from None
        rows.append({**f.get("properties", {}), "lon": lon, "lat": lat})
    if not rows:
        raise BuildingTableError(f"{path}: no features")
    table = pd.DataFrame(rows)
    lat0 = math.radians(table["lat"].mean())
    table["x_m"] = (table["lon"] - table["lon"].mean()) * 111_320.0 * math.cos(lat0)
    table["y_m"] = (table["lat"] - table["lat"].mean()) * 110_540.0
    return table


def validate_building_table(table: pd.DataFrame, *, source: str = "building table"
                            ) -> pd.DataFrame:
    """Check columns and values, fill derivable columns; errors name the culprit."""
    table = table.copy()
    for col in ("building_id", "x_m", "y_m", "type"):
        if col not in table.columns:
            raise BuildingTableError(f"{source}: missing column '{col}'")
    bad = sorted(set(table["type"]) - set(BUILDING_TYPES))
    if bad:
        raise BuildingTableError(
            f"{source}: unknown building type(s) {bad}; known: {BUILDING_TYPES}")
    table["building_id"] = table["building_id"].astype(str)
    if table["building_id"].duplicated().any():
        dup = table.loc[table["building_id"].duplicated(), "building_id"].tolist()[:5]
        raise BuildingTableError(f"{source}: duplicate building_id {dup}")
    if "dwellings" not in table.columns:
        table["dwellings"] = table["type"].map(
            lambda t: ARCHETYPES[t].dwellings[0])
    dw = pd.to_numeric(table["dwellings"], errors="coerce")
    if not (np.isfinite(dw) & (dw >= 0)).all():  # before annual_kwh is derived from it
        row = table.loc[~(np.isfinite(dw) & (dw >= 0)), "building_id"].tolist()[:3]
        raise BuildingTableError(f"{source}: 'dwellings' must be a number >= 0 for {row}")
    if "floor_area_m2" not in table.columns:
        table["floor_area_m2"] = [
            np.mean(ARCHETYPES[t].floor_area_per_dwelling_m2) * max(d, 1)
            for t, d in zip(table["type"], table["dwellings"])]
    if "roof_area_m2" not in table.columns:
        table["roof_area_m2"] = [
            f / ARCHETYPES[t].storeys * (1.0 if ARCHETYPES[t].flat_roof else 1.15)
            for t, f in zip(table["type"], table["floor_area_m2"])]
    if "annual_kwh" not in table.columns:
        table["annual_kwh"] = [
            np.mean(ARCHETYPES[t].kwh_per_dwelling) * (d if t in RESIDENTIAL_TYPES else f)
            for t, d, f in zip(table["type"], table["dwellings"], table["floor_area_m2"])]
    if "street" not in table.columns:
        table["street"] = ""
    for col in ("x_m", "y_m", "floor_area_m2", "roof_area_m2", "annual_kwh"):
        vals = pd.to_numeric(table[col], errors="coerce")
        if vals.isna().any() or not np.isfinite(vals).all():
            row = table.loc[~np.isfinite(vals.fillna(np.nan)), "building_id"].tolist()[:3]
            raise BuildingTableError(f"{source}: column '{col}' is missing or not finite for {row}")
        table[col] = vals.astype(float)
    if (table["annual_kwh"] <= 0).any():
        raise BuildingTableError(f"{source}: 'annual_kwh' must be positive")
    table["dwellings"] = table["dwellings"].astype(int)
    table["street"] = table["street"].fillna("").astype(str)
    return table[list(TABLE_COLUMNS)].reset_index(drop=True)


def write_bergwald_data(directory: str | Path | None = None) -> None:
    """Regenerate the shipped CSV files (developer helper)."""
    directory = data_path("") if directory is None else Path(directory)
    table, streets = make_bergwald()
    table.to_csv(Path(directory) / "bergwald_buildings.csv", index=False)
    streets.to_csv(Path(directory) / "bergwald_streets.csv", index=False)
