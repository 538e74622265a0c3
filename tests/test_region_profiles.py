"""One day of SimBench's profiles for a region (flexcore.region.profiles); the oracle is
SimBench's own ``get_absolute_values`` over the whole year."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import simbench

from flexcore.district.daytypes import DAY_TYPES, day_type_of
from flexcore.region.profiles import ProfileError, region_profiles, simbench_date
from flexcore.region.split import AREA_LOAD_PREFIX, split_region
from tests.region_grid import small_region

CODE = "1-LV-rural1--2-sw"      # loads, heat pumps, EVs, PV and storage, 28 loads


@pytest.fixture(scope="module")
def sb():
    net = simbench.get_simbench_net(CODE)
    return net, simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)


def _day(full, key, date):
    first = (date - dt.date(2016, 1, 1)).days * 96
    return full[key].to_numpy()[first:first + 96]


def test_undiversified_day_is_simbench_s_own(sb):
    net, full = sb
    rp = region_profiles(net, date="2016-01-13", max_shift=0, noise=0.0)
    d = dt.date(2016, 1, 13)
    assert rp.frames == 96 and rp.timestamps[0] == pd.Timestamp("2016-01-13 00:00")
    assert rp.day_type == "winter_workday" and len(rp.storage_index) == 5
    for got, key in ((rp.load_p_mw, ("load", "p_mw")), (rp.load_q_mvar, ("load", "q_mvar")),
                     (rp.sgen_p_mw, ("sgen", "p_mw")), (rp.storage_p_mw, ("storage", "p_mw"))):
        np.testing.assert_allclose(got, _day(full, key, d), atol=1e-12)
    assert rp.load_p_mw.std(axis=0).max() > 0       # a real day, not the static values


def test_diversified_loads_keep_their_daily_energy_but_not_lock_step(sb):
    net, full = sb
    d = dt.date(2016, 3, 2)
    rp = region_profiles(net, date=d, seed=4)
    ref_p, ref_q = _day(full, ("load", "p_mw"), d), _day(full, ("load", "q_mvar"), d)
    np.testing.assert_allclose(rp.load_p_mw.sum(axis=0), ref_p.sum(axis=0), rtol=1e-12)
    assert np.abs(rp.load_p_mw - ref_p).max() > 1e-4            # the shape did change
    # Q gets P's factors: without a shift, SimBench's Q/P at every quarter-hour
    noisy = region_profiles(net, date=d, seed=4, max_shift=0)
    np.testing.assert_allclose(noisy.load_q_mvar * ref_p, noisy.load_p_mw * ref_q, atol=1e-12)
    assert np.abs(noisy.load_p_mw - ref_p).max() > 1e-5
    prof = net.load.profile.to_numpy()
    moving = ref_p.std(axis=0) > 0                              # not idle all day
    prof = prof[moving]
    same = (prof[:, None] == prof[None, :]) & ~np.eye(len(prof), dtype=bool)
    assert same.sum() >= 10
    assert np.corrcoef(ref_p[:, moving].T)[same].min() > 0.999999   # SimBench: lock-step
    corr = np.corrcoef(rp.load_p_mw[:, moving].T)[same]
    assert corr.max() < 1 - 1e-6 and corr.mean() < 0.99
    # sgens keep SimBench's values; storage is only shifted
    np.testing.assert_allclose(rp.sgen_p_mw, _day(full, ("sgen", "p_mw"), d), atol=1e-12)
    st = _day(full, ("storage", "p_mw"), d)
    assert np.abs(rp.storage_p_mw).max() == pytest.approx(np.abs(st).max(), rel=0.5)
    # reproducible by seed
    again = region_profiles(net, date=d, seed=4)
    np.testing.assert_array_equal(again.load_p_mw, rp.load_p_mw)
    assert not np.array_equal(region_profiles(net, date=d, seed=5).load_p_mw, rp.load_p_mw)


def test_hourly_frames_are_means_of_quarter_hours(sb):
    net, _ = sb
    q = region_profiles(net, day_type="summer_sunday", seed=2)
    h = region_profiles(net, day_type="summer_sunday", seed=2, resolution_min=60)
    assert h.frames == 24 and h.date == dt.date(2016, 7, 24)
    np.testing.assert_allclose(h.load_p_mw, q.load_p_mw.reshape(24, 4, -1).mean(axis=1))
    np.testing.assert_allclose(h.totals_mw().sum() * 4, q.totals_mw().sum())


def test_day_types_map_to_2016_dates_of_that_type():
    for name in DAY_TYPES:
        d = simbench_date(name)
        assert d.year == 2016 and day_type_of(d) == name
    assert simbench_date("winter_workday") == dt.date(2016, 1, 20)


@pytest.mark.parametrize("kw, culprit", [
    ({"day_type": "winter_weekday"}, "winter_weekday"),
    ({"date": "2017-01-13"}, "2017-01-13"),
    ({"date": "13.01.2016"}, "13.01.2016"),
    ({"date": "2016-01-13", "day_type": "winter_workday"}, "not both"),
    ({"resolution_min": 30}, "30"),
])
def test_bad_day_type_or_date_is_one_line_naming_it(kw, culprit):
    with pytest.raises(ProfileError, match=culprit) as exc:
        region_profiles(small_region(), **kw)
    assert "\n" not in str(exc.value)


def test_apply_writes_only_the_rows_a_net_holds():
    net = small_region()
    names = ["H0-A", "H0-B", "G1-A", "L1-A"]
    net.load["profile"] = [names[i % 4] for i in range(len(net.load))]
    net.load.loc[0, "profile"] = None                        # the MV load stays static
    rp = region_profiles(net, day_type="winter_workday", seed=1)
    assert np.ptp(rp.load_p_mw[:, 0]) == 0 and np.ptp(rp.load_p_mw[:, 1]) > 0
    region = split_region(net, source="small")
    k = 70                                                   # 17:30
    rp.apply(region.net, k)
    np.testing.assert_allclose(region.net.load.p_mw, rp.load_p_mw[k])
    np.testing.assert_allclose(region.net.load.q_mvar, rp.load_q_mvar[k])
    for a in region.areas:
        before = a.net.load.p_mw.copy()
        rp.apply(a.net, k)
        np.testing.assert_allclose(a.net.load.p_mw, region.net.load.p_mw.loc[a.net.load.index])
        assert not np.allclose(before, a.net.load.p_mw)
    mv = region.mv_net
    area_rows = mv.load.name.str.startswith(AREA_LOAD_PREFIX)
    kept = mv.load.loc[area_rows, "p_mw"].copy()
    rp.apply(mv, k)
    pd.testing.assert_series_equal(mv.load.loc[area_rows, "p_mw"], kept)
    assert mv.load.loc[~area_rows, "p_mw"].tolist() == [rp.load_p_mw[k, 0]]


def test_a_grid_without_profile_names_is_refused():
    with pytest.raises(ProfileError, match="no element has a SimBench profile name"):
        region_profiles(small_region())
    with pytest.raises(ProfileError, match="not a SimBench code"):
        region_profiles(small_region(), source="simbench:nonsense")
