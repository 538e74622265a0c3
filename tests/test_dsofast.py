"""The region DSOs' fast per-frame paths equal their references: the fast power flow's LTDF
matrix (refilled without scipy's sparse products) bit for bit, the vectorised frame
injections as the row-by-row ``iloc`` writes, and a DSO updated to a new frame as one
built afresh from pandapower for that frame. ``python -m bench.bench_region_dso`` checks
every message of a real region co-simulation, old code against new."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from flexcore.exchange.bids import BidTable
from flexcore.grid.fastpf import _unit_conj
from flexcore.region.dsos import FrameInjections, _rows, lv_dso
from flexcore.region.split import LV_LIMITS, split_region
from tests.region_grid import small_region


@pytest.fixture(scope="module")
def region():
    return split_region(small_region(n_lv=3, lv_buses=6), source="small")


def _bids(area) -> BidTable:
    buses = area.buses[1:].astype(np.int64)
    return BidTable(ids=tuple(f"b{i}" for i in range(len(buses))),
                    volume_mw=np.linspace(0.01, 0.04, len(buses)),
                    price_eur_per_mwh=np.linspace(10, 20, len(buses)), bus=buses)


def _weights(f, v):
    i_f, i_t = f._yf @ v, f._yt @ v
    side = np.abs(i_f) * f._k_from >= np.abs(i_t) * f._k_to
    sign = np.where((v[f._f_bus] * np.conj(i_f)).real >= 0.0, 1.0, -1.0)
    return (side, np.where(side, _unit_conj(i_f) * sign * f._k_from, 0.0),
            np.where(side, 0.0, _unit_conj(i_t) * sign * f._k_to))


def _same_csr(a, b) -> bool:
    return (np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data))


def test_ltdf_matrix_equals_scipy_bit_for_bit(region):
    """At real points (activations, slack set points) and for random side patterns with
    zero weights, the refilled LTDF matrix is scipy's (same entries, same order, same
    bits), and so is its product with a block (the LTDF)."""
    rng = np.random.default_rng(3)
    area = region.areas[1]
    dso = lv_dso(area, _bids(area), limits=LV_LIMITS)
    lin, f = dso.lin, dso.lin.pf._fast
    assert f._ltdf_rows() is not None          # the fast layout is used
    checked = 0
    for a, vm in ((0.0, 1.0), (1.0, 1.0), (-2.0, 1.03), (3.0, 0.97)):
        lin.set_slack_vm(vm)
        lin.power_flow(a * lin.bids.volume_mw)
        v = f.v
        patterns = [_weights(f, v)]
        for _ in range(5):
            n = len(patterns[0][0])
            side = rng.random(n) < 0.5
            w = rng.normal(size=n) + 1j * rng.normal(size=n)
            w[rng.random(n) < 0.2] = 0.0
            patterns.append((side, np.where(side, w, 0.0), np.where(side, 0.0, w)))
        for side, w_f, w_t in patterns:
            ref = f._ltdf_matrix_scipy(v, w_f, w_t)
            fast = f._ltdf_matrix(v, side, w_f, w_t)
            assert _same_csr(ref, fast)
            x = rng.normal(size=(ref.shape[1], 4))
            assert np.array_equal(ref @ x, fast @ x)
            checked += 1
    assert checked == 24


def test_sensitivities_equal_the_reference_computation(region):
    """The fast sensitivities (cached injection columns, refilled LTDF matrix) equal those
    of the reference formulation at every point, bit for bit, and agree with pandapower's
    own (flexcore.grid.sensitivity.compute) to rounding."""
    from flexcore.grid import sensitivity

    area = region.areas[2]
    dso = lv_dso(area, _bids(area), limits=LV_LIMITS)
    lin, f = dso.lin, dso.lin.pf._fast
    buses = lin._flex_buses
    for a in (0.0, 0.5, 1.0):
        lin.power_flow(a * lin.bids.volume_mw)
        s = f.sensitivities(buses)
        side, w_f, w_t = _weights(f, f.v)
        rows, cols, n_cols = f._injection_columns(buses)[:3]
        x = f._lu[1].solve_unit(rows, cols, 1.0 / f.base_mva, n_cols)
        assert np.array_equal(s.ltdf, f._ltdf_matrix_scipy(f.v, w_f, w_t) @ x)
        ref = sensitivity.compute(lin.net, buses)
        np.testing.assert_allclose(s.vtdf, ref.vtdf, atol=1e-9)
        np.testing.assert_allclose(s.ltdf, ref.ltdf, atol=1e-6)


def _injections(net, frames: int, seed: int) -> FrameInjections:
    rng = np.random.default_rng(seed)
    load, sgen = net.load, net.sgen
    return FrameInjections(
        load.index.to_numpy(), load.bus.to_numpy(),
        rng.uniform(0.0, 0.03, (frames, len(load))), rng.uniform(0.0, 0.01, (frames, len(load))),
        sgen.index.to_numpy(), sgen.bus.to_numpy(), rng.uniform(0, 0.02, (frames, len(sgen))),
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((frames, 0)))


def _apply_reference(inj: FrameInjections, net, frame: int) -> None:
    """The former row-by-row writes (``iloc`` per table and column)."""
    for table, cols in (("load", ("p_mw", "q_mvar")), ("sgen", ("p_mw",))):
        mine, rows = inj._rows(net, table)
        for col in cols:
            j = net[table].columns.get_loc(col)
            net[table].iloc[rows, j] = getattr(inj, f"{table}_{col}")[frame, mine]


def test_frame_injections_apply_equals_row_writes(region):
    """On an area's own net (whole tables), the MV net (its area loads are not in the
    injections) and the region net, frame after frame: the same tables as the row-by-row
    writes; a table whose rows change is matched again."""
    import pandapower as pp

    net = copy.deepcopy(region.net)
    pp.create_sgen(net, int(region.areas[0].buses[-1]), p_mw=0.01)
    inj = _injections(net, 3, seed=5)
    area_net = copy.deepcopy(region.areas[0].net)
    pp.create_sgen(area_net, int(region.areas[0].buses[-1]), p_mw=0.0)
    area_net.sgen.index = [int(net.sgen.index[-1])]
    for target in (area_net, copy.deepcopy(region.mv_net), net):
        fast, ref = copy.deepcopy(target), copy.deepcopy(target)
        for frame in (0, 2, 1):
            inj.apply(fast, frame)
            _apply_reference(inj, ref, frame)
            for table in ("load", "sgen"):
                pd.testing.assert_frame_equal(fast[table], ref[table])
        assert any(k[0] == id(fast) for k in inj._memo)
    # the rows of a table change: matched again
    fast, ref = copy.deepcopy(area_net), copy.deepcopy(area_net)
    inj.apply(fast, 0)
    for n in (fast, ref):
        n.load.drop(n.load.index[:1], inplace=True)
    inj.apply(fast, 1)
    _apply_reference(inj, ref, 1)
    pd.testing.assert_frame_equal(fast.load, ref.load)


def test_dso_updated_to_a_frame_equals_a_fresh_build(region):
    """An LV DSO moved to a new frame (its net's injections applied, the engine updated,
    a new slack set point) publishes the package of a DSO built afresh from pandapower at
    that frame, to the power flow's tolerance; its slack response too; the rows of
    ``_rows`` are the package's."""
    area = region.areas[0]
    net = copy.deepcopy(area.net)
    inj = _injections(net, 2, seed=9)
    bids = _bids(area)
    inj.apply(net, 0)
    dso = lv_dso(area.__class__(**{**area.__dict__, "net": net}), bids, limits=LV_LIMITS,
                 salt="s")
    inj.apply(net, 1)
    eg = net.ext_grid.index[0]
    net.ext_grid.at[eg, "vm_pu"] = 1.01
    dso.relinearize(net=net, slack_vm_pu=1.01)
    fresh = lv_dso(area.__class__(**{**area.__dict__, "net": copy.deepcopy(net)}), bids,
                   limits=LV_LIMITS, salt="s")
    a, b = dso.package, fresh.package
    assert a.vm_rows == b.vm_rows and a.loading_rows == b.loading_rows
    for name in ("p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-8, rtol=1e-8)
    np.testing.assert_allclose(dso.slack_vtdf, fresh.slack_vtdf, atol=1e-5)
    vm, ld = dso.lin.power_flow(np.zeros(len(bids)))
    keys_v = list(dso.lin.keymap.vm_pu)
    rv, rl = _rows(dso.lin, a, np.zeros(len(bids)))
    assert np.array_equal(rv, vm[[keys_v.index(k) for k in a.vm_rows]])
    assert len(rl) == len(a.loading_rows)
