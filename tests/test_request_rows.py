"""The request announced first, and format-2 packages with the rows of that request.

Oracles: the format-1 clearing of the same package (cost to 1e-7, status, delivery), the
dense evaluation of every normalised side of format 1 (flexcore.dso.privacy._sides), and,
in the co-simulation slice, the same frames run with format 1 (``privacy = "full"``).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from flexcore.dso import privacy as P
from flexcore.dso.frame import CUT_SIDES
from flexcore.dso.linearizer import Linearizer
from flexcore.exchange.bids import BidTable
from flexcore.exchange.enums import ClearingStatus, FrameVerdict
from flexcore.exchange.hardened import PackageRequestError
from flexcore.exchange.messages import (
    MessageError,
    RequestMessage,
    VerdictMessage,
    from_wire,
)
from flexcore.exchange.package import PackageError, load_package, save_package
from flexcore.grid.grids import load_grid
from flexcore.market import clear
from flexcore.study.bidgen import synthetic_bids

SIMBENCH = "simbench:1-LV-semiurb4--0-sw"
REL = 1e-7


# --------------------------------------------------------------------------- messages
def test_request_message_on_the_wire():
    wire = RequestMessage(7, 1.8).to_wire()
    assert wire == {"kind": "request", "version": 1, "frame": 7, "round": 0, "request_mw": 1.8}
    back = from_wire(wire)
    assert isinstance(back, RequestMessage) and back.frame == 7 and back.request_mw == 1.8
    with pytest.raises(MessageError, match="request message version 2"):
        from_wire(wire | {"version": 2})
    for bad in (True, "1.8", math.nan, None):
        with pytest.raises(MessageError, match="'request_mw' must be a finite number"):
            from_wire(wire | {"request_mw": bad})
    # a verdict without a package: the optional field appears only then
    v = VerdictMessage(7, 0, FrameVerdict.OPTIMAL, safe=True, dispatch=True)
    assert "published" not in v.to_wire() and from_wire(v.to_wire()).published
    quiet = dataclasses.replace(v, published=False)
    assert from_wire(quiet.to_wire()).published is False
    with pytest.raises(MessageError, match="'published' must be true or false"):
        from_wire(v.to_wire() | {"published": 0})


# --------------------------------------------------------------------------- request rows
@pytest.fixture(scope="module")
def simbench():
    net = load_grid(SIMBENCH)
    b = synthetic_bids(net, seed=2, downward_share=0.3)
    bids = BidTable(ids=b.ids, volume_mw=3.0 * b.volume_mw,
                    price_eur_per_mwh=b.price_eur_per_mwh, bus=b.bus)
    pkg = Linearizer(net, bids).linearize((0, 0.5, 1)).package
    return pkg, bids


def _cut_loop(pkg, bids, request, most=CUT_SIDES):
    """The DSO/TSO exchange of one round: publish, clear, cut, until no row is violated."""
    rows = P.RequestRows(pkg, request_mw=request)
    for _ in range(500):
        hard, key = rows.publish(rng=np.random.default_rng(len(key_rows := rows.names())))
        r = clear(hard, bids, request)
        if not r.ok or not rows.cut(r.operating_point, r.activation_vector(pkg.columns),
                                    most=most):
            return r, hard, key, key_rows
    raise AssertionError("the cut loop did not end")


def test_request_rows_give_the_format_1_optimum(simbench):
    pkg, bids = simbench
    up = float(bids.volume_mw[bids.volume_mw > 0].sum())
    down = float(bids.volume_mw[bids.volume_mw < 0].sum())
    total = sum(2 * (len(pkg.vm_rows) + len(pkg.loading_rows)) for _ in range(pkg.m))
    optimal = 0
    published = []
    for req in (0.0, 0.2 * up, 0.5 * up, 0.65 * up, 0.3 * down, 0.8 * up, 1.5 * up):
        r1 = clear(pkg, bids, req)
        r_all, hard_all, _, _ = _cut_loop(pkg, bids, req, most=None)  # every violated side
        assert r_all.status == r1.status
        if r1.ok:
            assert r_all.cost_eur_per_h == pytest.approx(r1.cost_eur_per_h, rel=REL, abs=1e-9)
        r2, hard, key, _ = _cut_loop(pkg, bids, req)
        assert sum(hard.row_counts) <= sum(hard_all.row_counts)
        published.append(sum(hard.row_counts))
        assert r2.status == r1.status, (req, r1.message, r2.message)
        if r1.ok:
            optimal += 1
            assert r2.cost_eur_per_h == pytest.approx(r1.cost_eur_per_h, rel=REL, abs=1e-9)
            assert r2.delivered_mw == pytest.approx(req, abs=1e-7)
        assert hard.request_mw == req and sum(hard.row_counts) < total
        # every published row is a side of the format-1 model, normalised (key -> row)
        for i, rows in enumerate(key.rows):
            a_raw, c, names = P._sides(pkg, i)
            where = {nm: k for k, nm in enumerate(names)}
            for k, pr in enumerate(rows):
                s = where[(pr.key, pr.side)]
                a_pub = np.empty(pkg.n)
                a_pub[list(key.column_order)] = hard.rows_a[i][k]
                np.testing.assert_allclose(a_pub * pr.scale, a_raw[s], rtol=1e-12, atol=1e-15)
    print("published rows per request:", published, "of", total)
    assert optimal == 4
    # the limits bind for the larger requests: rows were published, not all of them
    assert max(published) > 0 and max(published) < 0.2 * total


def test_cut_adds_exactly_the_violated_sides(simbench):
    """Oracle: every normalised side of format 1 evaluated densely at random activations."""
    pkg, bids = simbench
    rows = P.RequestRows(pkg, request_mw=0.1)
    rng = np.random.default_rng(5)
    for i in range(pkg.m):
        a_raw, c, names = P._sides(pkg, i)
        a, rhs, _ = P.normalise_sides(a_raw, c)
        assert names == rows.names_[i]
        assert np.array_equal(rows.selected[i], rhs <= 0.0)   # at or past the limit
        for _ in range(3):
            x = rng.uniform(bids.lower_mw, bids.upper_mw)
            excess = np.where(rows.selected[i], -np.inf, a @ x - rhs)
            want = excess > 1e-9 * (1 + np.abs(rhs))
            if want.any():   # most=1: the most violated side only
                assert rows.cut(i, x, most=1) == 1
                assert rows.selected[i][int(np.argmax(excess))]
                want[int(np.argmax(excess))] = False
            assert rows.cut(i, x) == int(want.sum())
            assert not ((a @ x > rhs + 1e-9 * (1 + np.abs(rhs))) & ~rows.selected[i]).any()


def test_package_states_its_request_and_refuses_another(simbench, tmp_path):
    pkg, bids = simbench
    up = float(bids.volume_mw[bids.volume_mw > 0].sum())
    _, hard, _, _ = _cut_loop(pkg, bids, 0.5 * up)
    with pytest.raises(PackageRequestError, match="published for request_mw = .* cleared for"):
        clear(hard, bids, 0.4 * up)
    d = save_package(hard, tmp_path / "pkg")
    back = load_package(d)
    assert back.request_mw == hard.request_mw
    assert clear(back, bids, 0.5 * up).status == ClearingStatus.OPTIMAL
    # a package without the field is written as before (no manifest key)
    plain, _ = P.harden(pkg, lower_mw=bids.subset(pkg.columns).lower_mw,
                        upper_mw=bids.subset(pkg.columns).upper_mw)
    d2 = save_package(plain, tmp_path / "plain")
    assert "request_mw" not in (d2 / "manifest.json").read_text()
    assert load_package(d2).request_mw is None
    with pytest.raises(PackageError, match="'request_mw' must be a finite number"):
        dataclasses.replace(hard, request_mw=math.inf)


# --------------------------------------------------------------------------- co-simulation
def _slice(tmp_path, privacy: str):
    from scenarios.config import load_config
    from scenarios.runner import apply_overrides, run_scenario

    cfg = apply_overrides(load_config("scenarios/bergwald.toml"), day_types="summer_saturday",
                          frames="37,38,39,48")
    cfg = dataclasses.replace(cfg, plots=False,
                              dso=dataclasses.replace(cfg.dso, privacy=privacy, audit="largest"))
    run_dir, _ = run_scenario(cfg, out=tmp_path / privacy)
    return run_dir, pd.read_parquet(run_dir / "timeseries" / "frames.parquet")


def test_cosim_slice_format_2_clears_like_format_1(tmp_path):
    """Summer Saturday 09:15-09:45 (PV overvoltage counter-traded with request 0, one frame
    without anything to do) and 12:00 (request -0.5 MW), in format 1 and format 2."""
    import json

    full_dir, full = _slice(tmp_path, "full")
    exact_dir, exact = _slice(tmp_path, "exact")
    assert full["status"].tolist() == exact["status"].tolist() == ["optimal"] * 4
    assert full["request_mw"].tolist() == exact["request_mw"].tolist() == [0, 0, 0, -0.5]
    for col in ("dispatched", "rounds", "operating_point"):
        assert full[col].tolist() == exact[col].tolist(), col
    np.testing.assert_allclose(exact["cost_eur_per_h"], full["cost_eur_per_h"], rtol=REL,
                               atol=1e-9)
    np.testing.assert_allclose(exact["delivered_mw"], full["delivered_mw"], atol=1e-9)
    # 09:15: no request, base case inside the limits: nothing published (either format);
    # 09:30, 09:45: the base case violates a limit, so the DSO publishes for request 0
    # and the TSO's counter-trade resolves it (cost > 0)
    assert exact["operating_point"][0] == "" and exact["cost_eur_per_h"][0] == 0.0
    assert "nothing published" in exact["message"][0]
    assert (exact["cost_eur_per_h"][1:3] > 0).all()
    # the run audits what it published: format 2 rows for the largest request
    audit = json.loads((exact_dir / "dso" / "audit.json").read_text())["audits"]
    assert audit["largest_request"]["request_mw"] == -0.5
    assert audit["largest_request"]["package"]["format"] == 2


def test_balance_bound_is_the_lp_maximum():
    """The closed-form bound over box ∩ {sum x = R} against one HiGHS LP per row (scipy's
    linprog): same value, so it keeps exactly the rows the LP says can reach ``rhs``."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(11)
    for trial in range(4):
        n = 6 + 3 * trial
        a = rng.normal(size=(25, n))
        a[:, :2] = a[:, [1]]   # identical columns, as for bids at one bus
        vol = rng.uniform(-1.0, 1.0, n)
        lo, hi = np.minimum(0.0, vol), np.maximum(0.0, vol)
        for total in (0.0, 0.5 * hi.sum(), 0.9 * lo.sum()):
            got = P.balance_max(a, lo, hi, total)
            want = np.array([-linprog(-row, A_eq=np.ones((1, n)), b_eq=[total],
                                      bounds=list(zip(lo, hi)), method="highs").fun
                             for row in a])
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
            rhs = np.median(want)   # half the rows can reach it: keep == LP says so
            assert np.array_equal(got > rhs + 1e-9, want > rhs + 1e-9)
            # never looser than the box bound (no balance)
            box = a @ (0.5 * (lo + hi)) + np.abs(a) @ (0.5 * (hi - lo))
            assert np.all(got <= box + 1e-12)
    # out of reach of the box: no x at all
    assert np.all(P.balance_max(a, lo, hi, hi.sum() + 1.0) == -np.inf)


def test_tso_clear_refuses_another_request_exit_2(simbench, tmp_path, capsys):
    """The CLI: one line naming the culprit, exit 2; the package's own request clears."""
    from flexcore.exchange.bids import write_bids
    from scenarios.cli import main

    pkg, bids = simbench
    up = float(bids.volume_mw[bids.volume_mw > 0].sum())
    _, hard, _, _ = _cut_loop(pkg, bids, 0.5 * up)
    folder = save_package(hard, tmp_path / "pkg")
    csv = write_bids(bids.without_bus(), tmp_path / "bids.csv")
    args = ["tso", "clear", "--package", str(folder), "--bids", str(csv), "--out",
            str(tmp_path / "C.json"), "--request-mw"]
    assert main(args + [str(0.4 * up)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "published for request_mw" in err[0]
    assert main(args + [repr(hard.request_mw)]) == 0
