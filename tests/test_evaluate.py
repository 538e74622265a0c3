"""The evaluation report: quick run, consistency of tables.json with direct recomputation,
orderings the method predicts, over-time statistics, and the AC OPF / SLP comparison.
Real pandapower and HiGHS throughout (one quick evaluation shared by the tests)."""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from flexcore.errors import InputFileError
from scenarios.evaluate import (
    ERROR_KEYS,
    OVER_TIME_COLUMNS,
    EvalOptions,
    FramesTableError,
    evaluate,
    over_time,
    over_time_stats,
    render,
)

DAY_TYPES = ("winter_workday", "summer_sunday", "transition_saturday")


def _frames() -> pd.DataFrame:
    """A small frames table in the co-simulation's layout (its exact column names)."""
    rng = np.random.default_rng(7)
    n = 30
    df = pd.DataFrame({
        "frame": np.arange(n),
        "day_type": [DAY_TYPES[k % 3] for k in range(n)],
        "slot": np.arange(n) % 96,
        "status": ["optimal"] * n,
        "request_mw": np.where(np.arange(n) % 4 == 0, 0.0, 1.8),
        "delivered_mw": 1.8,
        "vm_mae_pu": rng.lognormal(-12, 1, n),
        "vm_rmse_pu": rng.lognormal(-11.5, 1, n),
        "loading_mae_percent": rng.lognormal(-6, 1, n),
        "loading_rmse_percent": rng.lognormal(-5, 1, n),
        "ac_violations": rng.integers(0, 2, n) * (rng.random(n) < 0.2),
        "cost_eur_per_h": np.where(np.arange(n) % 4 == 0, 0.0, 150.0),
    })
    df.loc[df.request_mw == 0, ["vm_mae_pu", "vm_rmse_pu", "loading_mae_percent",
                                "loading_rmse_percent"]] = np.nan
    df.loc[5, "status"] = "infeasible"
    return df


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    run = tmp_path_factory.mktemp("cosim")
    (run / "timeseries").mkdir()
    _frames().to_csv(run / "timeseries" / "frames.csv", index=False)
    out = tmp_path_factory.mktemp("eval") / "report"
    # the quick report plus section 4's AC OPF (flexcosim evaluate --quick leaves it out)
    options = dataclasses.replace(EvalOptions.quick(), ac_opf=True)
    res = evaluate(out=out, quick=True, run_dir=run, options=options)
    return res, run


def test_quick_writes_report_tables_and_figures(quick):
    res, _ = quick
    d = res.run_dir
    assert (d / "report.md").is_file() and (d / "versions.json").is_file()
    tables = json.loads((d / "tables.json").read_text())
    figs = tables["single_frame"]["figures"]
    for key in ("fig5", "fig6", "fig7_fixed", "fig7_refined", "fig8_fixed", "fig8_refined"):
        png = d / "figures" / figs[key]
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    text = (d / "report.md").read_text()
    for section in ("## 1.", "## 2.", "## 3.", "## 4."):
        assert section in text
    assert "co-simulation results not available" not in text
    # the over-time figure of the frames table, and EUR/h where a figure is a rate
    over = d / "figures" / tables["over_time"]["figure"]
    assert over.is_file() and f"](figures/{over.name})" in text
    assert "cost (EUR/h)" in text and "cost (EUR)" not in text
    assert "MILP cost (EUR/h)" in text


def test_table1_equals_direct_recomputation(quick):
    from flexcore.district.buildings import load_building_table
    from flexcore.dso.linearizer import Linearizer
    from flexcore.grid.grids import load_grid
    from flexcore.study.bidgen import synthetic_bids
    from flexcore.study.coordination import coordinate

    res, _ = quick
    tables = json.loads((res.run_dir / "tables.json").read_text())
    t1 = tables["single_frame"]
    s = t1["setup"]
    net = load_grid(s["grid"])
    bids = synthetic_bids(net, seed=s["seed"], table=load_building_table())
    lin = Linearizer(net, bids, salt=s["salt"])
    r = coordinate(lin, bids, s["request_mw"], fractions=tuple(s["fractions"]),
                   max_rounds=s["max_rounds"])
    # the final round's numbers once more straight from Linearizer.validate
    act = r.activation(bids.ids)
    v = lin.validate(act, predicted_vm_pu=r.clearing.predicted_vm_pu,
                     predicted_loading_percent=r.clearing.predicted_loading_percent)
    text = (res.run_dir / "report.md").read_text()
    for stored, direct in ((t1["fixed_points"], r.rounds[0]), (t1["after_rounds"], r.rounds[-1]),
                           (t1["after_rounds"], v)):
        for k in ERROR_KEYS:
            assert stored[k] == pytest.approx(getattr(direct, k), rel=1e-9, abs=1e-12), k
            assert f"{stored[k]:.2e}" in text
    assert t1["after_rounds"]["cost_eur_per_h"] == pytest.approx(r.clearing.cost_eur_per_h,
                                                                 abs=1e-9)
    assert f"{t1['source']['vm_mae_pu']:.2e}" == "2.30e-05" and "6.10e-03" in text


def test_error_orderings(quick):
    res, _ = quick
    rows = res.tables["linearisation"]["rows"]

    def row(lin, m, k):
        return next(r for r in rows if r["linearisation"] == lin and r["m"] == m
                    and r["rounds"] == k)

    m1, m3r, dc = row("AC", 1, 0), row("AC", 3, 1), row("DC-PTDF", 1, 0)
    assert m3r["vm_mae_pu"] < m1["vm_mae_pu"] / 100  # measured ~1.8e-6 vs ~3.5e-3
    assert m3r["loading_mae_percent"] < m1["loading_mae_percent"]
    # DC slopes: larger loading error than the exact AC slopes at the same point ...
    assert dc["loading_mae_percent"] > m1["loading_mae_percent"]
    # ... and for small steps (first-order slope error dominates) larger voltage error too;
    # at the full 1.8 MW step the DC slope error partly cancels the curvature (see report)
    same = res.tables["linearisation"]["same_dispatch"]
    small = [d for d in same if d["total_mw"] <= 0.2]
    assert small and all(d["dc_vm_mae_pu"] > 2 * d["ac_vm_mae_pu"] for d in small)
    ac = [d["ac_vm_mae_pu"] for d in same]
    assert ac == sorted(ac)  # the AC error grows with the step


def test_over_time_statistics_match_the_series(quick):
    res, run = quick
    ot = res.tables["over_time"]
    assert ot["available"] and ot["n_frames"] == 30
    df = pd.read_csv(run / "timeseries" / "frames.csv")
    for key in ERROR_KEYS:
        vals = df[key].dropna().to_numpy()
        st = ot["metrics"][key]
        assert st["n"] == len(vals)
        assert st["median"] == pytest.approx(np.median(vals), rel=1e-12)
        assert st["p95"] == pytest.approx(np.quantile(vals, 0.95), rel=1e-12)
        assert st["max"] == pytest.approx(vals.max(), rel=1e-12)
        worst = df.loc[df[key].idxmax()]
        assert st["worst_frame"]["day_type"] == worst["day_type"]
        assert st["worst_frame"]["request_mw"] == worst["request_mw"]
    assert ot["frames_with_violations"] == int((df.ac_violations > 0).sum())
    for dt in DAY_TYPES:
        grp = df[df.day_type == dt]
        e = ot["by_day_type"][dt]
        assert e["frames"] == len(grp)
        assert e["vm_mae_pu_max"] == pytest.approx(grp.vm_mae_pu.max(), rel=1e-12)
    text = res.report.read_text()
    assert f"{ot['metrics']['vm_mae_pu']['p95']:.2e}" in text


def test_over_time_cost_is_a_rate_and_its_energy_uses_the_frame_length():
    from flexcore.district.clock import FrameClock
    from scenarios.evaluate import cost_stats, frame_hours

    f = _frames()
    st = cost_stats(f)  # no timestamps: 15-minute frames
    paid = int((f["request_mw"] != 0).sum())
    assert st == {"column": "cost_eur_per_h", "frame_h": 0.25, "frames_with_cost": paid,
                  "mean_eur_per_h": 150.0, "max_eur_per_h": 150.0,
                  "energy_cost_eur": 150.0 * paid * 0.25}
    # a table written before the rename: cost_eur (EUR/h as well)
    old = cost_stats(f.rename(columns={"cost_eur_per_h": "cost_eur"}))
    assert old["column"] == "cost_eur" and old["energy_cost_eur"] == st["energy_cost_eur"]
    assert cost_stats(f.drop(columns="cost_eur_per_h")) is None
    # frame length from the clock time of a slot: hourly frames, 18:00 is slot 18
    hourly = FrameClock.for_day_types(["winter_workday"], [6, 18], resolution_min=60)
    g = pd.DataFrame({"timestamp": [fr.timestamp for fr in hourly.frames],
                      "slot": [fr.slot for fr in hourly.frames]})
    assert frame_hours(g) == 1.0


def test_over_time_reads_the_exact_columns_and_names_what_is_missing(tmp_path):
    from scenarios.results import FRAME_COLUMNS

    assert set(OVER_TIME_COLUMNS) <= set(FRAME_COLUMNS)  # what the co-simulation writes
    renamed = _frames().rename(columns={"vm_mae_pu": "vm_mae"})
    with pytest.raises(FramesTableError, match=r"run.csv: missing column\(s\) \['vm_mae_pu'\]"):
        over_time_stats(renamed, source="run.csv")
    with pytest.raises(InputFileError, match="no frames table"):
        over_time(run_dir=tmp_path, eval_dir=tmp_path / "e")
    res = evaluate(out=tmp_path / "e", quick=True,
                   options=EvalOptions(m_values=(1,), rounds=0, sweep_rounds=0, load_levels=()))
    assert not res.tables["over_time"]["available"]
    assert "co-simulation results not available" in res.report.read_text()


def test_opf_slp_milp_comparison(quick):
    """Bergwald at load level 1.0, 1.8 MW: all three methods reach the same AC-feasible
    optimum (measured: MILP 190.5479, OPF 190.5481, SLP 190.5436 EUR/h; the OPF converges
    in 2 loss iterations and takes ~50x the MILP's wall time)."""
    res, _ = quick
    rows = res.tables["optimality"]
    assert len(rows) == 1
    r = rows[0]
    assert r["load_level"] == 1.0 and r["request_mw"] == 1.8
    assert r["milp_status"] == "optimal" and r["milp_ac_feasible"]
    slp, opf = r["slp"], r["opf"]
    assert slp["status"] == "converged" and opf["status"] == "optimal"
    for ref in (slp, opf):
        assert ref["ac_feasible"] is True and ref["ac_violations"] == 0
        assert ref["delivered_mw"] == pytest.approx(r["request_mw"], abs=1e-4)
        # the same optimum within 1e-4 relative (measured: 2e-5 SLP, 1e-6 OPF)
        assert r["milp_cost_eur_per_h"] == pytest.approx(ref["cost_eur_per_h"], rel=1e-4)
    assert r["cost_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert r["time_ratio_opf"] < 1.0  # the MILP with refinement is faster than the AC OPF
    # flexcosim evaluate --quick runs no AC OPF (most of its time): the report says so
    assert not EvalOptions.quick().ac_opf and EvalOptions().ac_opf
    tables = copy.deepcopy(res.tables)
    del tables["optimality"][0]["opf"]
    assert "| not run (quick) |" in render(tables)


def test_over_time_on_a_real_cosimulation_run(tmp_path):
    """A reduced real run (three frames of one day type, 1.8 MW at 18:00): the over-time
    section of the report must equal statistics recomputed from the stored time series."""
    from scenarios.config import load_config
    from scenarios.runner import apply_overrides, run_scenario

    cfg = apply_overrides(load_config("scenarios/bergwald.toml"), day_types="winter_workday",
                          frames="28,48,72")
    run, _ = run_scenario(cfg, out=tmp_path / "run")
    ot = over_time(run_dir=run, eval_dir=tmp_path / "eval")
    df = pd.read_parquet(run / "timeseries" / "frames.parquet")
    assert ot["available"] and ot["n_frames"] == len(df) == 3
    ok = df[df.status == "optimal"]
    assert len(ok) >= 2
    st = ot["metrics"]["vm_mae_pu"]
    assert st["n"] == int(df.vm_mae_pu.notna().sum())
    assert st["max"] == pytest.approx(df.vm_mae_pu.max(), rel=1e-12)
    assert st["median"] == pytest.approx(df.vm_mae_pu.median(), rel=1e-12)
    assert ot["frames_with_violations"] == int((df.ac_violations > 0).sum()) == 0
    assert df.vm_mae_pu.max() <= 2.3e-5  # within the source's Table 1


def test_write_json_is_strict_json(tmp_path):
    """Run folders and reports hold strict JSON: NaN / inf become null (RFC 8259)."""
    from flexcore.runs import write_json

    path = write_json(tmp_path / "t.json", {"a": math.nan, "b": [1.0, np.inf, np.float64(2.5)],
                                             "c": np.array([np.nan, 3.0]), "d": np.int64(4)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None, 2.5], "c": [None, 3.0], "d": 4}
