"""The fast region builder (flexcore.market.direct.RegionArrays) hands HiGHS exactly the model
of the general path: ``region_program`` -> ``_drop_fixed_columns`` -> CSR -> passModel arrays.

Oracle: the general path on real Bergwald packages (format 1 from the Linearizer, format 2
from ``harden``), with bids that have no volume (dropped columns), semi-continuous and
indivisible bids (binaries), and every objective. Arrays are compared bit for bit, and the
models HiGHS actually holds after passModel are read back and compared too.
"""
from __future__ import annotations

from dataclasses import replace

import highspy
import numpy as np
import pytest

from flexcore.district.buildings import load_building_table
from flexcore.dso.linearizer import Linearizer
from flexcore.dso.privacy import harden
from flexcore.exchange.bids import BidTable
from flexcore.exchange.enums import ClearingStatus, Objective
from flexcore.exchange.hardened import HardenedPackage
from flexcore.grid.grids import load_grid
from flexcore.market import clear
from flexcore.market.direct import (
    HighsArrays,
    RegionArrays,
    _drop_fixed_columns,
    highs_arrays,
    prepare,
    region_program,
)
from flexcore.study.bidgen import synthetic_bids

FIELDS = ("cost", "col_lo", "col_hi", "row_lo", "row_hi", "start", "index", "value",
          "integrality")


@pytest.fixture(scope="module")
def bergwald():
    net = load_grid("bergwald")
    bids = synthetic_bids(net, seed=1, table=load_building_table(), downward_share=0.2)
    pkg = Linearizer(net, bids).linearize((0, 0.5, 1)).package
    b = bids.subset(pkg.columns)
    hard, _ = harden(pkg, lower_mw=b.lower_mw, upper_mw=b.upper_mw,
                     rng=np.random.default_rng(0))
    return pkg, hard, bids


def _fortran(package):
    """The package with Fortran-ordered arrays, as packages read from the wire can be: numpy
    then takes other summation paths, which the fast builder must follow exactly."""
    if isinstance(package, HardenedPackage):
        return replace(package, p_flex_mw=np.asfortranarray(package.p_flex_mw),
                       rows_a=[np.asfortranarray(a) for a in package.rows_a])
    return replace(package, p_flex_mw=np.asfortranarray(package.p_flex_mw),
                   vtdf=np.asfortranarray(package.vtdf), ltdf=np.asfortranarray(package.ltdf))


def _variants(bids: BidTable) -> dict[str, BidTable]:
    n = len(bids)
    rng = np.random.default_rng(3)
    vol = bids.volume_mw.copy()
    vol[rng.choice(n, n // 3, replace=False)] = 0.0          # bids without volume
    zero = replace(bids, volume_mw=vol)
    mins = np.where(rng.random(n) < 0.2, 0.5 * np.abs(vol), 0.0)
    indiv = rng.random(n) < 0.1
    return {"plain": bids, "zero": zero,
            "binaries": replace(zero, min_mw=mins, indivisible=indiv & (vol != 0))}


def _general(p, i) -> HighsArrays:
    lp, free = _drop_fixed_columns(region_program(p, i)[0])
    assert len(free)
    return highs_arrays(lp)


def _held_by_highs(arr: HighsArrays) -> dict[str, np.ndarray]:
    """The model HiGHS holds after passModel (read back through getLp)."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.passModel(len(arr.cost), len(arr.row_lo), int(arr.start[-1]),
                int(highspy.MatrixFormat.kRowwise), int(highspy.ObjSense.kMinimize), 0.0,
                arr.cost, arr.col_lo, arr.col_hi, arr.row_lo, arr.row_hi, arr.start, arr.index,
                arr.value, arr.integrality)
    lp = h.getLp()
    a = lp.a_matrix_
    return {"cost": np.array(lp.col_cost_), "col_lo": np.array(lp.col_lower_),
            "col_hi": np.array(lp.col_upper_), "row_lo": np.array(lp.row_lower_),
            "row_hi": np.array(lp.row_upper_), "start": np.array(a.start_),
            "index": np.array(a.index_), "value": np.array(a.value_),
            "integrality": np.array([int(v) for v in lp.integrality_])}


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("fmt", ["full", "hardened"])
@pytest.mark.parametrize("objective", list(Objective))
@pytest.mark.parametrize("variant", ["plain", "zero", "binaries"])
def test_fast_region_arrays_equal_the_general_path(bergwald, fmt, objective, variant, order):
    pkg, hard, bids = bergwald
    table = _variants(bids)[variant]
    package = pkg if fmt == "full" else hard
    if order == "F":
        package = _fortran(package)
        assert package.p_flex_mw.flags["F_CONTIGUOUS"]
    for request in (0.9, -0.4):
        p = prepare(package, table, request, objective=objective)
        fast = RegionArrays(p)
        assert fast.exact
        for i in range(p.m):
            new, old = fast.arrays(i), _general(p, i)
            assert new is not None
            for f in FIELDS:
                a, b = getattr(new, f), getattr(old, f)
                assert a.dtype == b.dtype and a.shape == b.shape, f
                assert a.tobytes() == b.tobytes(), f"{f} differs in region {i}"
            if variant != "plain" and i == 1:
                held_new, held_old = _held_by_highs(new), _held_by_highs(old)
                for f in FIELDS:
                    assert np.array_equal(held_new[f], held_old[f]), f
            if variant == "zero":
                assert len(new.cost) < p.n + len(p.binary) + (p.n if p.proximity else 0)


def test_no_bid_with_volume_takes_the_general_path(bergwald):
    pkg, _, bids = bergwald
    table = replace(bids, volume_mw=np.zeros(len(bids)))
    p = prepare(pkg, table, 0.5, objective=Objective.ABS_COST_PROXIMITY)
    assert RegionArrays(p).arrays(0) is None          # only the t columns are free
    r = clear(pkg, table, 0.5, objective=Objective.ABS_COST_PROXIMITY, diagnose_infeasible=False)
    assert r.status == ClearingStatus.INFEASIBLE      # nothing can deliver 0.5 MW
