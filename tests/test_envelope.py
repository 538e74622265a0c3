"""Privacy envelopes (flexcore.dso.envelope, flexcore.market.envelope): real grids, HiGHS,
AC power flows. Oracles: an LP (HiGHS) for the worst corner of the box, pandapower's AC power
flow at the corners and at every envelope clearing, the exact (format-1) clearing with
refinement for the cost of privacy, a hand-solved 3-bid clearing."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import highspy
import numpy as np
import pytest

from flexcore.district.buildings import load_building_table
from flexcore.dso.envelope import (
    EnvelopeError,
    envelope,
    envelope_rows,
    envelope_with_report,
)
from flexcore.dso.linearizer import Linearizer
from flexcore.exchange.bids import BidTable, read_bids
from flexcore.exchange.clearing import ClearingError
from flexcore.exchange.enums import ClearingStatus, PrivacyLevel
from flexcore.exchange.hardened import HardenedPackage
from flexcore.exchange.limits import VIOLATION_TOL
from flexcore.exchange.package import PointInfo
from flexcore.grid.grids import load_grid
from flexcore.market.diagnose import diagnose
from flexcore.market.direct import prepare
from flexcore.market.envelope import clear_envelope
from flexcore.study.bidgen import synthetic_bids
from flexcore.study.coordination import coordinate


@pytest.fixture(scope="module")
def bergwald():
    net = load_grid("bergwald")
    bids = synthetic_bids(net, seed=1, table=load_building_table())
    lin = Linearizer(net, bids, salt="test-envelope")
    pkg = lin.linearize((0.0, 0.5, 1.0)).package
    hp, rep = envelope_with_report(pkg, bids, linearizer=lin, rng=np.random.default_rng(1))
    q_max = diagnose(prepare(pkg, bids.without_bus(), 1e3)).max_deliverable_mw
    return lin, bids, pkg, hp, rep, q_max


@pytest.fixture(scope="module")
def semiurb4():
    net = load_grid("simbench:1-LV-semiurb4--0-sw")
    bids = read_bids(Path(__file__).resolve().parent / "cases" / "semiurb4_mixed_bids.csv",
                     require_bus=True)
    lin = Linearizer(net, bids, salt="test-envelope")
    return lin, bids, lin.linearize((0.0, 0.5, 1.0)).package


def _box(hp: HardenedPackage, columns) -> tuple[np.ndarray, np.ndarray]:
    pos = {c: k for k, c in enumerate(hp.columns)}
    idx = [pos[c] for c in columns]
    return hp.lower_mw[idx], hp.upper_mw[idx]


class _BoxLP:
    """The oracle: HiGHS maximising a linear function over the published box (one model,
    only the objective changes)."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray):
        self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", False)
        self.n = len(lo)
        self.h.addVars(self.n, lo, hi)
        self.h.changeObjectiveSense(highspy.ObjSense.kMaximize)

    def maximise(self, c: np.ndarray) -> float:
        self.h.changeColsCost(self.n, np.arange(self.n, dtype=np.int32), c)
        self.h.run()
        assert self.h.getModelStatus() == highspy.HighsModelStatus.kOptimal
        return float(self.h.getInfo().objective_function_value)


def _ac_within_limits(lin: Linearizer, x: np.ndarray) -> bool:
    vm, ld = lin.power_flow(x)
    lim = lin.limits
    return bool(vm.min() >= lim.vm_min_pu - VIOLATION_TOL
                and vm.max() <= lim.vm_max_pu + VIOLATION_TOL
                and ld.min() >= lim.loading_min_percent - VIOLATION_TOL
                and ld.max() <= lim.loading_max_percent + VIOLATION_TOL)


# --------------------------------------------------------------------------- box condition
@pytest.mark.parametrize("case", ["bergwald", "semiurb4"])
def test_worst_corner_of_the_box_keeps_every_row_by_lp(case, request):
    """For every row (both sides) at the point the envelope was computed for, HiGHS
    maximises the row over the published box: the maximum stays within the limit. The
    semiurb4 bids are mixed up/down, so lower ranges are exercised too."""
    if case == "bergwald":
        lin, bids, pkg, hp, rep, _ = request.getfixturevalue("bergwald")
    else:
        lin, bids, pkg = request.getfixturevalue("semiurb4")
        hp, rep = envelope_with_report(pkg, bids, linearizer=lin)
        assert (hp.lower_mw < 0).any() and (hp.upper_mw > 0).any()
    assert rep.points == (1,) and hp.points == (pkg.points[1],)   # the a = 0.5 point
    lo, hi = _box(hp, pkg.columns)
    assert np.all(lo <= 0) and np.all(hi >= 0)
    assert np.all(lo >= bids.lower_mw - 1e-12) and np.all(hi <= bids.upper_mw + 1e-12)
    rows = envelope_rows(pkg, rep.points)
    worst_slack = np.inf
    lp = _BoxLP(lo, hi)
    for r in range(len(rows.c)):
        if not np.any(rows.s[r]):
            continue
        top, bottom = lp.maximise(rows.s[r]) + rows.c[r], -lp.maximise(-rows.s[r]) + rows.c[r]
        assert top <= rows.hi[r] + 1e-9, (rows.key[r], top)
        assert bottom >= rows.lo[r] - 1e-9, (rows.key[r], bottom)
        worst_slack = min(worst_slack, rows.hi[r] - top, bottom - rows.lo[r])
    if case == "bergwald":
        assert worst_slack < 1e-4   # not needlessly small: some row binds
    else:
        # the lower corner (all downward bids at their range end) overloaded a line by
        # 6.8 % in AC; two rows were tightened by the mismatch, so they bind with slack
        first = [c for c in rep.corners if c.round == 0 and c.corner == "lower"][0]
        assert first.violations == 2 and first.max_violation == pytest.approx(6.79, abs=0.05)
        assert rep.rounds == 1 and rep.tightened_rows == 2 and rep.ac_safe
        assert _ac_within_limits(lin, lo) and _ac_within_limits(lin, hi)


def test_no_published_quantity_couples_two_bids(bergwald):
    _, bids, pkg, hp, _, _ = bergwald
    assert hp.privacy == PrivacyLevel.ENVELOPE
    assert sorted(hp.columns) == sorted(bids.ids) and hp.columns != pkg.columns  # permuted
    assert all(len(a) == 0 for a in hp.rows_a) and all(len(r) == 0 for r in hp.rows_rhs)
    arrays = hp.arrays()  # no row couples two bids: every row array is empty
    assert {k for k, a in arrays.items() if a.size} == {"p_flex_mw", "lower_mw", "upper_mw"}
    assert arrays["lower_mw"].shape == arrays["upper_mw"].shape == (hp.n,)
    # p_flex_mw is the bids' own volumes times the public fraction: per bid, no coupling
    pos = {c: k for k, c in enumerate(bids.ids)}
    vol = bids.volume_mw[[pos[c] for c in hp.columns]]
    assert np.allclose(arrays["p_flex_mw"], 0.5 * vol[None, :])


# --------------------------------------------------------------------------- AC
def test_envelope_corners_hold_in_ac(bergwald):
    """The corner in the request's direction (every bid at the end of its range) and random
    corners, by pandapower's AC power flow at the frame's fixed injections; the report's own
    check found no violation, so no tightening round was needed."""
    lin, bids, pkg, hp, rep, _ = bergwald
    assert rep.ac_checked and rep.ac_safe and rep.rounds == 0
    # upper, lower, 8 random corners, the price-order fills at 25 / 50 / 75 % (upward only)
    assert len(rep.corners) == 13 and all(c.converged for c in rep.corners)
    assert [c.corner for c in rep.corners[-3:]] == ["merit up 25%", "merit up 50%",
                                                    "merit up 75%"]
    lo, hi = _box(hp, bids.ids)
    assert _ac_within_limits(lin, hi)
    rng = np.random.default_rng(7)
    for _ in range(4):
        assert _ac_within_limits(lin, np.where(rng.random(len(hi)) < 0.5, lo, hi))
    # the linear model errs at the corner: the check is not vacuous
    assert max(c.max_abs_error_loading_percent for c in rep.corners) > 1.0


def test_ac_violation_tightens_and_recomputes(bergwald):
    """At a = 0 with price weighting k = 1 the linear model is optimistic at the upper
    corner (measured: one line 1.24 % over in AC); the envelope is tightened by the
    mismatch and recomputed until every checked corner is AC-safe."""
    lin, bids, pkg, *_ = bergwald
    hp, rep = envelope_with_report(pkg, bids, point=0, price_exponent=1.0, linearizer=lin,
                                   rng=np.random.default_rng(0))
    first = [c for c in rep.corners if c.round == 0 and c.corner == "upper"][0]
    assert first.violations >= 1 and first.max_violation > 0.5
    assert rep.rounds >= 1 and rep.tightened_rows >= 1 and rep.ac_safe
    assert _ac_within_limits(lin, _box(hp, bids.ids)[1])
    unchecked = envelope(pkg, bids, point=0, price_exponent=1.0)
    assert not _ac_within_limits(lin, _box(unchecked, bids.ids)[1])


# --------------------------------------------------------------------------- cost of privacy
def _cost_of_privacy(bergwald, fractions):
    lin, bids, pkg, hp, _, q_max = bergwald
    out = []
    for f in fractions:
        # an exact clearing the refinement rounds leave AC-unsafe (seen at 75 %) costs at
        # most what a safe one would: the cost of privacy is then over-, not underestimated
        exact = coordinate(lin, bids, f * q_max, package=pkg)
        assert exact.clearing.status == ClearingStatus.OPTIMAL
        env = clear_envelope(hp, bids.without_bus(), f * q_max)
        assert env.status == ClearingStatus.OPTIMAL
        assert _ac_within_limits(lin, env.activation_vector(bids.ids))
        out.append(env.cost_eur_per_h / exact.clearing.cost_eur_per_h - 1.0)
    return out


def test_envelope_keeps_90_percent_of_the_exact_maximum(bergwald):
    # measured: exact maximum 2.102 MW (AC-safe after refinement), envelope 1.959 MW = 93.2 %
    lin, bids, pkg, hp, rep, q_max = bergwald
    assert q_max == pytest.approx(2.102, abs=0.01)
    assert rep.upper_total_mw == pytest.approx(hp.upper_mw.sum())
    assert rep.upper_total_mw >= 0.90 * q_max
    res = clear_envelope(hp, bids.without_bus(), rep.upper_total_mw)
    assert res.ok and _ac_within_limits(lin, res.activation_vector(bids.ids))
    over = clear_envelope(hp, bids.without_bus(), rep.upper_total_mw + 1e-3)
    assert over.status == ClearingStatus.INFEASIBLE
    assert over.diagnosis.max_deliverable_mw == pytest.approx(rep.upper_total_mw)


def test_cost_of_privacy_at_most_5_percent_up_to_three_quarters(bergwald):
    # measured (bench/bench_privacy.py): 1.3 % at 50 %, 4.3 % at 75 % of 2.102 MW (the exact
    # clearing at 75 % stays AC-unsafe after its rounds: its cost is a lower bound)
    cop = _cost_of_privacy(bergwald, (0.25, 0.5, 0.75))
    assert max(cop) <= 0.05 and min(cop) >= -1e-9


@pytest.mark.slow
def test_cost_of_privacy_every_request_up_to_three_quarters(bergwald):
    # measured: 0.0 0.0 1.2 1.2 1.3 2.1 2.9 % at 10 ... 70 %, 4.3 % at 75 %
    cop = _cost_of_privacy(bergwald, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75))
    assert max(cop) <= 0.05 and min(cop) >= -1e-9


def test_min_share_keeps_that_share_of_the_largest_total_range(bergwald):
    """``min_share``: the cheapness-weighted envelope keeps >= 95 % of the "total" envelope's
    range (the exact linear maximum at the point, 2.102 MW on Bergwald)."""
    _, bids, pkg, *_ = bergwald
    total = envelope(pkg, bids, weighting="total").upper_mw.sum()
    plain = envelope(pkg, bids).upper_mw.sum()
    kept = envelope(pkg, bids, min_share=0.95).upper_mw.sum()
    assert plain < 0.95 * total <= kept + 1e-9 and kept <= total + 1e-9


# --------------------------------------------------------------------------- failure modes
def test_row_past_its_limit_at_zero_has_no_envelope(bergwald):
    _, bids, pkg, *_ = bergwald
    vm = pkg.vm_pu.copy()
    vm[1, 5] = 1.2   # with x = 0 the linear model of point 1 is far above 1.05 p.u.
    with pytest.raises(EnvelopeError, match=pkg.vm_rows[5]):
        envelope(replace(pkg, vm_pu=vm), bids, point=1)
    with pytest.raises(EnvelopeError, match="weighting"):
        envelope(pkg, bids, weighting="volume")


# --------------------------------------------------------------------------- the TSO's LP
def _three_bids():
    bids = BidTable(ids=("A", "B", "C"), volume_mw=np.array([1.0, 2.0, -1.0]),
                    price_eur_per_mwh=np.array([50.0, 30.0, 20.0]))
    hp = HardenedPackage(privacy=PrivacyLevel.ENVELOPE, columns=("C", "A", "B"),
                         points=(PointInfo("a=0", 0.0), PointInfo("a=0.5", 0.5)),
                         p_flex_mw=np.array([[0.0, 0.0, 0.0], [-0.5, 0.5, 1.0]]),
                         lower_mw=np.array([-0.6, 0.0, 0.0]),
                         upper_mw=np.array([0.0, 0.8, 0.5]))
    return bids, hp


@pytest.mark.parametrize(("request_mw", "expected", "cost"), [
    (1.0, {"A": 0.5, "B": 0.5, "C": 0.0}, 0.5 * 50 + 0.5 * 30),   # B (cheap) full, A rest
    (1.3, {"A": 0.8, "B": 0.5, "C": 0.0}, 0.8 * 50 + 0.5 * 30),   # both at their range end
    (0.3, {"A": 0.0, "B": 0.3, "C": 0.0}, 0.3 * 30),
    (-0.4, {"A": 0.0, "B": 0.0, "C": -0.4}, 0.4 * 20),
])
def test_clear_envelope_three_bids_by_hand(request_mw, expected, cost):
    bids, hp = _three_bids()
    res = clear_envelope(hp, bids, request_mw)
    assert res.status == ClearingStatus.OPTIMAL
    assert res.activation_mw == pytest.approx(expected, abs=1e-9)
    assert res.cost_eur_per_h == pytest.approx(cost, abs=1e-9)
    assert res.delivered_mw == pytest.approx(request_mw, abs=1e-9)
    assert res.predicted_vm_pu == {} and res.predicted_loading_percent == {}
    x = res.activation_vector(hp.columns)
    nearest = int(np.argmin(((hp.p_flex_mw - x) ** 2).sum(axis=1)))
    assert res.operating_point == nearest
    assert res.operating_point_label == hp.points[nearest].label


def test_clear_envelope_infeasible_and_bad_input():
    bids, hp = _three_bids()
    res = clear_envelope(hp, bids, 1.5)
    assert res.status == ClearingStatus.INFEASIBLE and not res.ok
    assert res.diagnosis.max_deliverable_mw == pytest.approx(1.3)
    assert res.diagnosis.min_deliverable_mw == pytest.approx(-0.6)
    assert "[-0.6, 1.3]" in res.message
    assert clear_envelope(hp, bids, -0.7).status == ClearingStatus.INFEASIBLE
    with pytest.raises(ClearingError, match="D"):
        clear_envelope(hp, BidTable(ids=("A", "B", "D"), volume_mw=np.ones(3),
                                    price_eur_per_mwh=np.ones(3)), 0.5)
    small = BidTable(ids=("A", "B", "C"), volume_mw=np.array([0.5, 2.0, -1.0]),
                     price_eur_per_mwh=np.ones(3))
    with pytest.raises(ClearingError, match="'A'"):
        clear_envelope(hp, small, 0.2)
    with pytest.raises(ClearingError, match="objective"):
        clear_envelope(hp, bids, 0.2, objective="cheapest")


# --------------------------------------------------------------------------- more grids
def _stressed(net) -> BidTable:
    """The format-2 tests' bids (tests/test_hardened.py): synthetic, 30 % downward, three
    times the single-house volume, so that limits bind within the bids' range."""
    b = synthetic_bids(net, seed=2, downward_share=0.3)
    return BidTable(ids=b.ids, volume_mw=3.0 * b.volume_mw,
                    price_eur_per_mwh=b.price_eur_per_mwh, bus=b.bus)


@pytest.mark.slow   # ~25 s: the exact clearings with AC refinement
@pytest.mark.parametrize("case", ["simbench", "meshed"])
def test_targets_hold_on_simbench_and_meshed(case):
    """The single-frame study on SimBench 1-LV-semiurb4--0-sw and its meshed variant: the
    default envelope (cheapness^2 weighting; here at the point a = 0, the fallback when the
    a = 0.5 model puts x = 0 past a limit; corners checked in AC at that point with the
    frame's fixed injections) keeps >= 90 % of the exact maximum deliverable
    request, and costs <= 5 % more than the exact clearing (with refinement) at 10 ... 75 %
    of it; every envelope clearing is AC-safe. Measured: 94.9 % / 96.7 % kept, cost of
    privacy at most 1.0 % / 0.1 % (bench/bench_privacy.py --grids)."""
    from tests.grid_helpers import meshed

    net = load_grid("simbench:1-LV-semiurb4--0-sw")
    net = meshed(net) if case == "meshed" else net
    bids = _stressed(net)
    lin = Linearizer(net, bids, salt="test-envelope")
    pkg = lin.linearize((0.0, 0.5, 1.0)).package
    hp, rep = envelope_with_report(pkg, bids, linearizer=lin, rng=np.random.default_rng(1))
    assert rep.points == (0,) and rep.ac_checked and rep.ac_safe
    assert (hp.lower_mw < 0).any()   # mixed directions: both ends of the box exercised
    q_max = diagnose(prepare(pkg, bids.without_bus(), 1e3)).max_deliverable_mw
    assert rep.upper_total_mw >= 0.90 * q_max
    for f in (0.1, 0.25, 0.5, 0.75):
        exact = coordinate(lin, bids, f * q_max, package=pkg)
        assert exact.clearing.ok and exact.safe
        env = clear_envelope(hp, bids.without_bus(), f * q_max)
        assert env.status == ClearingStatus.OPTIMAL
        assert _ac_within_limits(lin, env.activation_vector(bids.ids))
        cop = env.cost_eur_per_h / exact.clearing.cost_eur_per_h - 1.0
        assert -1e-9 <= cop <= 0.05, (f, cop)


# --------------------------------------------------------------------------- cost weighting
def test_cost_weighting_bounds_the_cost_of_privacy_at_every_level(bergwald):
    """``weighting="cost"``: oracle: the TSO's LP (clear_envelope) on the published envelope
    against the DSO's exact linear clearing (flexcore.market.clear, via cost_levels) at
    5 ... 75 % of the linear maximum: within the bound at every level, and >= 90 % of the
    maximum kept; and the bound is what limits it (a level sits at the bound)."""
    from flexcore.dso.envelope import cost_levels

    lin, bids, pkg, _, _, q_max = bergwald
    levels = cost_levels(pkg, bids)
    assert levels.max_deliverable_mw == pytest.approx(q_max)
    assert len(levels.request_mw) == 15
    hp, rep = envelope_with_report(pkg, bids, weighting="cost", max_cop=0.03, levels=levels,
                                   rng=np.random.default_rng(1))
    assert rep.upper_total_mw >= 0.9 * q_max
    cop = []
    for q, c in zip(levels.request_mw, levels.exact_cost_eur_per_h):
        res = clear_envelope(hp, bids.without_bus(), q)
        assert res.ok
        cop.append(res.cost_eur_per_h / c - 1.0)
    assert max(cop) <= 0.03 + 1e-6 and min(cop) >= -1e-7
    assert max(cop) >= 0.03 - 1e-4
    with pytest.raises(EnvelopeError, match="cost_levels"):
        from flexcore.dso.envelope import box_ranges
        box_ranges(envelope_rows(pkg, (1,)), bids, weighting="cost")


# --------------------------------------------------------------------------- command line
def test_cli_publishes_an_ac_checked_envelope_and_audits_it(tmp_path, capsys):
    """``dso linearize --privacy envelope`` checks the envelope's corners in AC (and says at
    which point), ``dso audit`` finds nothing shared between bids, ``tso clear`` clears it."""
    from scenarios.cli import main
    from tests.cases.bad_input.setup_helpers import write_small_grid

    write_small_grid(case=tmp_path, tmp=tmp_path)
    bids = tmp_path / "bids.csv"
    bids.write_text("id,bus,volume_mw,price_eur_per_mwh\nq1,2,0.2,30\nq2,3,0.3,40\n"
                    "q3,4,0.25,50\nq4,5,0.2,60\n")
    grid, pkg = str(tmp_path / "grid.json"), tmp_path / "PKG"
    assert main(["dso", "linearize", "--grid", grid, "--bids", str(bids), "--privacy",
                 "envelope", "--out", str(pkg)]) == 0
    out = capsys.readouterr().out
    assert "format 2 (envelope): point [1]" in out and "AC corners safe: True" in out
    assert main(["dso", "audit", "--package", str(pkg), "--grid", grid, "--json",
                 str(tmp_path / "audit.json")]) == 0
    scores = json.loads((tmp_path / "audit.json").read_text())["scores"]
    assert scores["downstream_sets"]["count"] == 0 and scores["colocated"]["count"] == 0
    assert main(["tso", "clear", "--package", str(pkg), "--bids", str(bids),
                 "--request-mw", "0.1", "--out", str(tmp_path / "C.json")]) == 0
    assert json.loads((tmp_path / "C.json").read_text())["status"] == "optimal"
