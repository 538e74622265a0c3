"""AC safety of the coordination (flexcore.dso.safety): real grids, HiGHS, AC power flows.

The semiurb4 case is the reliability issue's: 39 mixed bids on SimBench
``1-LV-semiurb4--0-sw`` (bids as in ``/work/shared/cases/semiurb4_mixed_bids.csv``). Every
verdict is checked against pandapower's AC OPF (``ac_opf``): AC-safe and within 1 % of the
OPF's cost where the OPF finds a dispatch, refused where it does not.
"""
from __future__ import annotations

import numpy as np
import pytest

from flexcore.dso.linearizer import Linearizer
from flexcore.dso.safety import coordinate_safe, tighten, with_solver_margin
from flexcore.exchange.bids import BidTable
from flexcore.exchange.enums import FrameVerdict
from flexcore.grid.grids import load_grid
from flexcore.market import clear
from flexcore.study.baselines import ac_opf
from flexcore.study.coordination import coordinate

# (bus, volume_mw, price_eur_per_mwh) of bids b000..b038
SEMIURB4_MIXED = [
    (0, -0.016397, 159.62), (2, 0.011804, 177.24), (3, 0.025352, 163.47),
    (4, 0.011879, 70.12), (5, 0.015572, 110.82), (6, -0.01793, 162.68),
    (7, -0.017828, 58.76), (8, 0.019926, 27.91), (9, 0.017387, 103.92),
    (10, -0.012216, 112.54), (11, 0.010435, 22.12), (12, 0.021993, 56.11),
    (13, 0.004097, 169.41), (15, 0.010958, 178.46), (16, -0.015616, 135.15),
    (18, -0.003827, 117.41), (19, -0.015993, 85.03), (20, -0.003324, 89.77),
    (21, 0.007905, 166.94), (22, 0.029447, 126.2), (23, -0.012353, 141.76),
    (24, 0.015448, 63.12), (25, 0.006514, 194.21), (26, 0.021466, 74.08),
    (27, -0.012731, 43.69), (28, -0.017141, 182.71), (29, -0.004669, 54.64),
    (30, -0.011016, 52.5), (31, -0.012409, 122.54), (32, 0.014685, 63.11),
    (33, 0.026782, 104.19), (34, -0.007426, 155.24), (35, 0.013677, 25.46),
    (36, 0.029146, 138.4), (38, 0.017617, 177.11), (39, 0.019348, 143.06),
    (40, 0.017497, 157.74), (41, -0.004757, 188.02), (42, 0.023577, 165.89),
]


@pytest.fixture(scope="module")
def semiurb4():
    net = load_grid("simbench:1-LV-semiurb4--0-sw")
    bus, vol, price = (np.array(c) for c in zip(*SEMIURB4_MIXED))
    bids = BidTable(ids=tuple(f"b{k:03d}" for k in range(len(bus))), volume_mw=vol.astype(float),
                    price_eur_per_mwh=price.astype(float), bus=bus.astype(int))
    return Linearizer(net, bids, salt="test-safety"), bids


def test_feasible_request_ends_safe_within_one_percent_of_ac_opf(semiurb4):
    # -0.105 MW: coordinate() ends "unsafe" for a 1e-9 % residue on a line at its limit
    lin, bids = semiurb4
    plain = coordinate(lin, bids, -0.105, max_rounds=3)
    assert not plain.safe
    assert plain.validation.max_violation["amount"] < 1e-6
    res = coordinate_safe(lin, bids, -0.105, max_rounds=3)
    assert res.safe and res.verdict == FrameVerdict.OPTIMAL and res.gave_up_reason is None
    assert res.validation.max_loading_percent <= 100.0
    assert res.validation.vm_min_pu >= 0.95 and res.validation.vm_max_pu <= 1.05
    assert res.clearing.delivered_mw == pytest.approx(-0.105, abs=1e-9)
    lin.power_flow(res.activation(bids.ids))  # its import: the OPF's first guess
    opf = ac_opf(lin, bids, -0.105, ext_grid_guess_mw=float(lin.net.res_ext_grid.p_mw.sum()))
    assert opf.ok and opf.ac.feasible
    assert abs(res.clearing.cost_eur - opf.cost_eur) <= 0.01 * opf.cost_eur


def test_issue_case_is_refused_where_the_ac_opf_finds_nothing(semiurb4):
    # -0.11 MW: the linear model at a=0.5 promises it (line at -100 %, AC -106.9 %); AC
    # cannot deliver it: the tightened model turns infeasible and the request is refused
    lin, bids = semiurb4
    res = coordinate_safe(lin, bids, -0.11, max_rounds=3)
    assert not res.safe and res.verdict == FrameVerdict.INFEASIBLE
    assert "observed AC mismatches" in res.gave_up_reason
    assert res.rounds[0].ac_safe is False and res.rounds[0].rows_tightened >= 1
    assert res.rounds[-1].status == "infeasible"
    opf = ac_opf(lin, bids, -0.11)
    assert not opf.ok


def test_request_beyond_the_grid_is_refused_in_round_zero(semiurb4):
    # the downward bids hold 0.186 MW, the grid takes ~0.107 MW of it: -0.15 MW is built
    # to be infeasible, and the linear model already says so
    lin, bids = semiurb4
    assert bids.volume_mw[bids.volume_mw < 0].sum() < -0.15
    res = coordinate_safe(lin, bids, -0.15, max_rounds=3)
    assert res.verdict == FrameVerdict.INFEASIBLE and not res.safe
    assert len(res.rounds) == 1 and res.selected_round is None
    assert res.gave_up_reason.startswith("infeasible in round 0: the linear model admits")


def test_tighten_is_exact_at_the_clearing_and_only_grows(semiurb4):
    lin, bids = semiurb4
    pkg = lin.linearize((0.0, 0.5, 1.0)).package
    res = clear(with_solver_margin(pkg), bids.without_bus(), -0.11)
    x, i = res.activation_vector(pkg.columns), res.operating_point
    vm, ld = lin.power_flow(x)
    out, rep = tighten(pkg, point=i, clearing_activation=x, ac_vm_pu=vm,
                       ac_loading_percent=ld, lower_mw=bids.lower_mw, upper_mw=bids.upper_mw)
    assert rep.n == 2 and rep.relaxed_rows == ()  # the two lines AC overloads
    shifted = [list(pkg.loading_rows).index(s.key) for s in rep.shifts]
    _, new = out.predict(i, x)
    np.testing.assert_allclose(new[shifted], ld[shifted], atol=1e-9)  # exact at x
    assert all(s.shift < 0 and s.ac < -100.0 for s in rep.shifts)
    unchanged = np.ones(len(pkg.loading_rows), bool)
    unchanged[shifted] = False
    np.testing.assert_array_equal(out.loading_percent[:, unchanged],
                                  pkg.loading_percent[:, unchanged])
    np.testing.assert_array_equal(np.delete(out.loading_percent, i, axis=0),
                                  np.delete(pkg.loading_percent, i, axis=0))
    again, rep2 = tighten(out, point=i, clearing_activation=x, ac_vm_pu=vm,
                          ac_loading_percent=ld)  # nothing new observed: no change
    assert rep2.n == 0
    np.testing.assert_array_equal(again.loading_percent, out.loading_percent)


def test_bergwald_behaves_as_before():
    from flexcore.district.buildings import load_building_table
    from flexcore.study.bidgen import synthetic_bids

    net = load_grid("bergwald")
    bids = synthetic_bids(net, seed=1, table=load_building_table())
    lin = Linearizer(net, bids, salt="test-safety")
    pkg = lin.linearize((0.0, 0.5, 1.0)).package
    before = coordinate(lin, bids, 1.8, package=pkg, max_rounds=2)
    assert before.safe
    exact = coordinate_safe(lin, bids, 1.8, package=pkg, max_rounds=2, vm_margin_pu=0.0,
                            loading_margin_percent=0.0)
    assert exact.safe and not any(r.rows_tightened for r in exact.rounds)
    assert exact.clearing.cost_eur == pytest.approx(before.clearing.cost_eur, rel=1e-9)
    assert [r.operating_point_label for r in exact.rounds] == \
        [r.operating_point_label for r in before.rounds]
    # with the default solver margin: the margin's price only (measured ~1e-5 relative)
    default = coordinate_safe(lin, bids, 1.8, package=pkg, max_rounds=2)
    assert default.safe and default.selected_round == len(before.rounds) - 1
    assert default.clearing.cost_eur == pytest.approx(before.clearing.cost_eur, rel=1e-4)
