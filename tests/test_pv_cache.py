"""The PV year's disk cache (flexcore.district.profiles.pv_year_per_kwp): a later process
reads the very bits pvlib computed; a broken file is computed again; ``off`` writes none."""
from __future__ import annotations

import numpy as np

from flexcore.district import profiles


def _fresh(monkeypatch, where) -> None:
    monkeypatch.setenv("FLEXCOSIM_CACHE_DIR", str(where))
    profiles.pv_year_per_kwp.cache_clear()   # as in a new process


def test_pv_year_from_the_disk_cache_is_the_computed_year(tmp_path, monkeypatch):
    computed = profiles._pv_year_computed(35.0, 170.0, profiles.REFERENCE_YEAR)
    _fresh(monkeypatch, tmp_path)
    first = profiles.pv_year_per_kwp(35.0, 170.0)
    files = list((tmp_path / "pv").glob("*.npy"))
    assert len(files) == 1 and np.array_equal(first, computed) and computed.sum() > 100
    files[0].write_bytes(files[0].read_bytes()[:-8] + np.float64(7.0).tobytes())  # tamper
    _fresh(monkeypatch, tmp_path)
    assert profiles.pv_year_per_kwp(35.0, 170.0)[-1] == 7.0   # read, not recomputed
    files[0].write_bytes(b"not an npy file")
    _fresh(monkeypatch, tmp_path)
    again = profiles.pv_year_per_kwp(35.0, 170.0)
    assert np.array_equal(again, computed) and not again.flags.writeable
    _fresh(monkeypatch, tmp_path)
    assert np.array_equal(profiles.pv_year_per_kwp(35.0, 170.0), computed)  # rewritten
    _fresh(monkeypatch, "off")
    assert np.array_equal(profiles.pv_year_per_kwp(20.0, 200.0),
                          profiles._pv_year_computed(20.0, 200.0, profiles.REFERENCE_YEAR))
    assert len(list((tmp_path / "pv").glob("*.npy"))) == 1
    profiles.pv_year_per_kwp.cache_clear()


def test_load_profiles_from_the_disk_cache_are_demandlibs(tmp_path, monkeypatch):
    """The BDEW load profiles' disk cache (profiles._slp_arrays): the bits of slp_year's
    columns, read back in a later process; a broken file is computed again."""
    year = profiles.REFERENCE_YEAR
    want = profiles.slp_year(year)

    def fresh(where):
        monkeypatch.setenv("FLEXCOSIM_CACHE_DIR", str(where))
        profiles._slp_arrays.cache_clear()

    def same(got):
        assert list(got) == [str(c) for c in want.columns]
        for name, arr in got.items():
            assert np.array_equal(arr, want[name].to_numpy(), equal_nan=True)
            assert not arr.flags.writeable and arr.flags.c_contiguous

    fresh(tmp_path)
    same(profiles._slp_arrays(year))        # computed and written
    files = list((tmp_path / "slp").glob("*.npz"))
    assert len(files) == 1
    fresh(tmp_path)
    same(profiles._slp_arrays(year))        # read back
    files[0].write_bytes(b"not an npz file")
    fresh(tmp_path)
    same(profiles._slp_arrays(year))        # computed again
    fresh("off")
    same(profiles._slp_arrays(year))
    profiles._slp_arrays.cache_clear()
