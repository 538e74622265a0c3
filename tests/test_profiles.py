"""Profiles: annual energies, BDEW day-type shapes, PV timing, seeded individual variation."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from flexcore.district.daytypes import DAY_TYPES, REPRESENTATIVE_DATES, day_type_of, make_frames
from flexcore.district.profiles import BuildingProfiles
from flexcore.district.weather import load_try, weather_at_resolution

TYPES = ["single_house", "single_house", "duplex", "apartment_tower", "school",
         "community_centre", "shop"]


def small_table() -> pd.DataFrame:
    return pd.DataFrame({
        "building_id": [f"T{k:03d}" for k in range(len(TYPES))],
        "x_m": 0.0, "y_m": 0.0, "type": TYPES,
        "dwellings": [1, 1, 2, 12, 0, 0, 0],
        "floor_area_m2": [140, 150, 240, 840, 3000, 600, 400],
        "roof_area_m2": [90, 95, 80, 300, 1500, 400, 350],
        "annual_kwh": [4000.0, 4500.0, 7000.0, 24000.0, 40000.0, 15000.0, 45000.0],
        "street": "Teststr",
    })


@pytest.fixture(scope="module")
def profiles() -> BuildingProfiles:
    return BuildingProfiles.from_table(small_table(), seed=3)


def test_day_types_and_frames():
    assert len(DAY_TYPES) == 9 and "winter_workday" in DAY_TYPES
    for name, date in REPRESENTATIVE_DATES.items():
        assert day_type_of(date) == name and date.year == 2010
    frames = make_frames()
    assert len(frames) == 9 * 96 and [f.index for f in frames] == list(range(864))
    hourly = make_frames(day_types=["summer_sunday"], slots=[12, 13], resolution_min=60)
    assert [f.start.hour for f in hourly] == [12, 13] and hourly[0].duration_h == 1.0
    rng = make_frames(start="2010-04-02", end="2010-04-03")  # Good Friday
    assert len(rng) == 96 and rng[0].day_type == "transition_sunday"
    with pytest.raises(ValueError):
        make_frames(resolution_min=30)


def test_weather_try_region12():
    wx = load_try()
    assert len(wx) == 8760
    assert 10.0 < wx["temp_air_c"].mean() < 12.5          # Mannheim, mean ~11 degC
    assert 1000 < wx["ghi_w_m2"].sum() / 1000 < 1200       # kWh/m2/a
    q = weather_at_resolution(15)
    assert len(q) == 35040
    assert abs(q["temp_air_c"].mean() - wx["temp_air_c"].mean()) < 0.01


def test_annual_energy_matches_table(profiles):
    # rel. tol 1e-9: the 15-min year is renormalised to annual_kwh exactly
    np.testing.assert_allclose(profiles.annual_load_kwh(), small_table()["annual_kwh"], rtol=1e-9)


def test_day_types_follow_bdew(profiles):
    frames = make_frames(day_types=["winter_workday", "winter_sunday"])
    pf = profiles.for_frames(frames)
    school = pf.load_p_mw[:, 4]
    work, sunday = school[:96], school[96:]
    assert work[40:64].mean() > 5 * sunday[40:64].mean()     # G1: ~0 at the weekend
    assert work[40:64].mean() > 3 * work[:20].mean()         # daytime >> night
    # H0 shape (the type's base profile, without the per-building noise)
    from flexcore.district.profiles import slp_year
    h0 = slp_year(2010)["h0"]
    wd = h0.loc["2010-01-20"].to_numpy()[:48]
    su = h0.loc["2010-01-24"].to_numpy()[:48]
    assert np.argmax(su[20:48]) > np.argmax(wd[20:48])       # peak before noon, later on Sunday
    assert su[24:32].mean() < wd[24:32].mean()               # 6-8 h: later rising on Sunday


def test_pv_night_zero_noon_peak(profiles):
    frames = make_frames(day_types=["summer_workday", "summer_sunday", "transition_workday"])
    pv = profiles.for_frames(frames).pv_p_mw
    night = [f.slot < 16 or f.slot >= 88 for f in frames]   # before 4:00 or after 22:00
    assert np.all(pv[night] == 0.0)
    kwp = profiles.pv_kwp
    assert np.all(kwp > 0)
    yields = profiles.annual_pv_kwh() / kwp
    assert np.all((yields > 900) & (yields < 1250))
    # clear-ish days: the power-weighted centroid of the day is near solar noon (~12:26 CET)
    total = pv.sum(axis=1).reshape(3, 96)
    t_mid = (np.arange(96) + 0.5) / 4
    centroids = (total * t_mid).sum(axis=1) / total.sum(axis=1)
    assert np.all(np.abs(centroids - 12.45) < 1.0), centroids


def test_variation_reproducible_and_individual(profiles):
    frames = make_frames(day_types=["transition_workday"])
    a = profiles.for_frames(frames)
    b = BuildingProfiles.from_table(small_table(), seed=3).for_frames(frames)
    c = BuildingProfiles.from_table(small_table(), seed=4).for_frames(frames)
    np.testing.assert_array_equal(a.load_p_mw, b.load_p_mw)
    np.testing.assert_array_equal(a.pv_p_mw, b.pv_p_mw)
    assert not np.allclose(a.load_p_mw, c.load_p_mw)
    # two single houses, normalised to their annual energy, still differ
    s0 = a.load_p_mw[:, 0] / 4000.0
    s1 = a.load_p_mw[:, 1] / 4500.0
    assert np.abs(s0 - s1).max() > 0.1 * s0.max()
    assert np.all(a.load_q_mvar > 0) and np.all(a.load_q_mvar < a.load_p_mw)


def test_district_timing():
    from flexcore.district.buildings import load_building_table

    table = load_building_table()
    t0 = time.perf_counter()
    bp = BuildingProfiles.from_table(table, seed=0)
    pf = bp.for_frames(make_frames())
    elapsed = time.perf_counter() - t0
    assert pf.load_p_mw.shape == (864, len(table)) == (864, 241)
    np.testing.assert_allclose(bp.annual_load_kwh(), table["annual_kwh"], rtol=1e-9)
    assert elapsed < 10.0, elapsed
