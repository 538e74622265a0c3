"""Privacy audit of a region's packages (flexcore.region.audit) on a small test region: the
MV package over area injections leaks how the areas nest on the MV feeder (scored against
the private MV model and, independently, against the region's own graph), the hardened
MV package does not, an LV package is audited against its area's model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flexcore.dso.audit import attack_downstream_sets
from flexcore.region.audit import audit_region, write_region_audit
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, setup_region
from tests.region_grid import small_region, true_nesting


@pytest.fixture(scope="module")
def setup():
    net = small_region(n_lv=4, lv_buses=8)
    net.ext_grid["vm_pu"] = 1.048
    region = split_region(net)
    # large bids: full activation lifts MV voltages past 1.055, so the hardened package
    # publishes some rows
    bids = region_bids(region, seed=1, share=(3.0, 3.5))
    return setup_region(region, bids)


def test_mv_package_reveals_the_nesting_of_areas(setup):
    res = audit_region(setup, order_permutations=10)
    mv = res.mv
    n_areas = len(setup.lv)
    # every MV loading row's downstream area set recovered
    assert mv["downstream_sets"].count == mv["downstream_sets"].total > 0
    assert mv["own_bus"].count == n_areas
    assert res.coupling.count == res.coupling.total == n_areas
    # the attack's sets, as area names, are the true nesting from the region's own graph
    pkg = setup.mv.package
    guessed = {frozenset(pkg.columns[j] for j in s) for s in attack_downstream_sets(pkg)}
    assert guessed == true_nesting(setup)
    assert len(guessed) == n_areas      # a chain: {all}, {all but first}, ..., {last}
    # the salts are private (flexcore.region.ids): neither the old naming scheme ("mv",
    # "lv<trafo>") nor the public ids rebuild a row key
    assert mv["salt_rows"].count == 0 < mv["salt_rows"].total
    assert res.lv["salt_rows"].count == 0 < res.lv["salt_rows"].total


def test_hardened_mv_package_leaks_less(setup):
    res = audit_region(setup, order_permutations=10)
    h = res.mv_hardened
    assert h is not None and "rows" in h.package
    bound = h.package["bounds"]
    assert h["downstream_sets"].count <= bound["distinct_rows_published"]
    assert h["downstream_sets"].count < res.mv["downstream_sets"].count
    assert not h["own_bus"].applicable and not h["salt_rows"].applicable
    # what a hardened MV package would still publish for the coupling: the areas' slack
    # voltage rows; their shared-path block gives the nesting back in full
    assert len(res.mv_coupling.package) and res.mv_coupling.package["l"] == 0
    assert res.mv_coupling["own_bus"].count == len(setup.lv)
    assert res.nesting.count == res.nesting.total == len(setup.lv) - 1


def test_lv_package_audit_and_files(setup, tmp_path):
    res = write_region_audit(setup, tmp_path, order_permutations=10)
    d = next(d for d in setup.lv if d.name == res.lv_name)
    assert len(d.bids) == max(len(x.bids) for x in setup.lv)
    assert res.lv["own_bus"].total == len(d.bids) and res.lv["own_bus"].count > 0
    assert res.lv["downstream_sets"].count > 0
    doc = json.loads((tmp_path / "audit_mv.json").read_text())
    assert doc["mv"]["scores"]["downstream_sets"]["count"] == res.mv["downstream_sets"].count
    assert doc["summary"]["coupling_own_bus"] == f"{len(setup.lv)}/{len(setup.lv)}"
    lv = json.loads((tmp_path / "audit_lv.json").read_text())
    assert lv["lv_area"] == d.name
    assert np.isclose(lv["lv"]["scores"]["own_bus"]["fraction"],
                      res.lv["own_bus"].count / len(d.bids))
