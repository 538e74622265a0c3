"""AC safety of the coordination (flexcore.dso.safety): real grids, HiGHS, AC power flows.

The semiurb4 case is the reliability issue's: 39 mixed bids on SimBench
``1-LV-semiurb4--0-sw`` (``tests/cases/semiurb4_mixed_bids.csv``, a copy of
``/work/shared/cases/semiurb4_mixed_bids.csv``). The loop is ``coordinate()`` over
:class:`~flexcore.dso.refinement.RefinementSession`, the one the agents and the evaluation
run. Every verdict is checked against pandapower's AC OPF (``ac_opf``): AC-safe and within
1 % of the OPF's cost where the OPF finds a dispatch, refused where it does not.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexcore.dso.linearizer import Linearizer
from flexcore.dso.safety import tighten, with_solver_margin
from flexcore.exchange.bids import read_bids
from flexcore.exchange.enums import FrameVerdict
from flexcore.grid.grids import load_grid
from flexcore.market import clear
from flexcore.study.baselines import ac_opf
from flexcore.study.coordination import coordinate

#: the loop without the safety rule (as before it was wired in)
PLAIN = {"tighten_unsafe": False, "solver_margin": False, "keep_cheapest_safe": False}
CASE = Path(__file__).resolve().parent / "cases" / "semiurb4_mixed_bids.csv"


@pytest.fixture(scope="module")
def semiurb4():
    net = load_grid("simbench:1-LV-semiurb4--0-sw")
    bids = read_bids(CASE, require_bus=True)
    return Linearizer(net, bids, salt="test-safety"), bids


def test_feasible_request_ends_safe_within_one_percent_of_ac_opf(semiurb4):
    # -0.105 MW: coordinate() ends "unsafe" for a 1e-9 % residue on a line at its limit
    lin, bids = semiurb4
    plain = coordinate(lin, bids, -0.105, max_rounds=3, **PLAIN)
    assert not plain.safe
    assert plain.validation.max_violation["amount"] < 1e-6
    res = coordinate(lin, bids, -0.105, max_rounds=3)
    assert res.safe and res.verdict.verdict == FrameVerdict.OPTIMAL and res.verdict.dispatch
    assert res.validation.max_loading_percent <= 100.0
    assert res.validation.vm_min_pu >= 0.95 and res.validation.vm_max_pu <= 1.05
    assert res.clearing.delivered_mw == pytest.approx(-0.105, abs=1e-9)
    lin.power_flow(res.activation(bids.ids))  # its import: the OPF's first guess
    opf = ac_opf(lin, bids, -0.105, ext_grid_guess_mw=float(lin.net.res_ext_grid.p_mw.sum()))
    assert opf.ok and opf.ac.feasible
    assert abs(res.clearing.cost_eur_per_h - opf.cost_eur_per_h) <= 0.01 * opf.cost_eur_per_h


def test_issue_case_is_refused_where_the_ac_opf_finds_nothing(semiurb4):
    # -0.11 MW: the linear model at a=0.5 promises it (line at -100 %, AC -106.9 %); AC
    # cannot deliver it: the tightened model turns infeasible and the request is refused
    lin, bids = semiurb4
    res = coordinate(lin, bids, -0.11, max_rounds=3)
    assert not res.safe and res.verdict.verdict == FrameVerdict.INFEASIBLE
    assert not res.verdict.dispatch and res.selected_round is None
    assert "observed AC mismatches" in res.verdict.message
    assert res.rounds[0].ac_safe is False and res.rounds[0].rows_tightened >= 1
    assert res.rounds[-1].status == "infeasible"
    opf = ac_opf(lin, bids, -0.11)
    assert not opf.ok


def test_request_beyond_the_grid_is_refused_in_round_zero(semiurb4):
    # the downward bids hold 0.186 MW, the grid takes ~0.107 MW of it: -0.15 MW is built
    # to be infeasible, and the linear model already says so
    lin, bids = semiurb4
    assert bids.volume_mw[bids.volume_mw < 0].sum() < -0.15
    res = coordinate(lin, bids, -0.15, max_rounds=3)
    assert res.verdict.verdict == FrameVerdict.INFEASIBLE and not res.safe
    assert len(res.rounds) == 1 and res.selected_round is None
    assert res.verdict.message and "observed AC mismatches" not in res.verdict.message


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
    before = coordinate(lin, bids, 1.8, package=pkg, max_rounds=2, **PLAIN)
    assert before.safe
    exact = coordinate(lin, bids, 1.8, package=pkg, max_rounds=2, solver_margin=False)
    assert exact.safe and not any(r.rows_tightened for r in exact.rounds)
    assert exact.clearing.cost_eur_per_h == pytest.approx(before.clearing.cost_eur_per_h, rel=1e-9)
    assert [r.operating_point_label for r in exact.rounds] == \
        [r.operating_point_label for r in before.rounds]
    # with the default solver margin: the margin's price only (measured ~1e-5 relative)
    default = coordinate(lin, bids, 1.8, package=pkg, max_rounds=2)
    assert default.safe and default.selected_round == len(before.rounds) - 1
    assert default.clearing.cost_eur_per_h == pytest.approx(before.clearing.cost_eur_per_h,
                                                            rel=1e-4)


@pytest.mark.parametrize("request_mw", [-0.08, -0.1, -0.107, 0.3])
def test_safe_wherever_the_ac_opf_is_feasible_else_refused(semiurb4, request_mw):
    """The rule's contract against the independent oracle: where pandapower's AC OPF finds
    an activation, coordinate() dispatches an AC-safe one within 1 % of its cost; where it
    finds none, the DSO refuses (never dispatches an unsafe clearing)."""
    lin, bids = semiurb4
    res = coordinate(lin, bids, request_mw, max_rounds=3)
    opf = ac_opf(lin, bids, request_mw)
    if opf.ok:
        assert res.safe and res.verdict.dispatch
        assert res.clearing.delivered_mw == pytest.approx(request_mw, abs=1e-9)
        assert abs(res.clearing.cost_eur_per_h - opf.cost_eur_per_h) <= 0.01 * opf.cost_eur_per_h
        # the dispatched clearing is checked in AC again, on a fresh power flow
        vm, ld = lin.power_flow(res.activation(bids.ids))
        assert vm.min() >= 0.95 - 1e-9 and vm.max() <= 1.05 + 1e-9
        assert np.abs(ld).max() <= 100.0 + 1e-9
    else:
        assert not res.safe and not res.verdict.dispatch and res.verdict.message
    assert request_mw != -0.107 or not opf.ok  # the sweep covers the refusal side too
