"""Calendar runs: BDEW day types of real dates (German national holidays as Sunday, 24/31
December as Saturday), the profile and TRY days a date reads, the calendar clock, unit
states carried across midnight (FPUSim driven frame by frame, battery SOC by hand), a short
co-simulation across a day boundary, and ``[calendar]`` errors naming the key."""
from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib

import pandas as pd
import pytest

from flexcore.district.clock import ClockError, FrameClock
from flexcore.district.daytypes import (
    REFERENCE_YEAR,
    _data_day_type,
    day_type_of,
    make_frames,
    reference_date,
)
from flexcore.district.weather import temperature_c
from scenarios.config import ConfigError, load_config, parse_config

SIMBENCH = "simbench:1-LV-semiurb4--0-no_sw"


@pytest.mark.parametrize("date,day_type", [
    ("2025-04-21", "transition_sunday"),   # Easter Monday (a Monday)
    ("2025-04-18", "transition_sunday"),   # Good Friday
    ("2025-12-25", "winter_sunday"),       # Christmas Day (a Thursday)
    ("2025-12-24", "winter_saturday"),     # Christmas Eve (a Wednesday): BDEW Saturday
    ("2025-12-31", "winter_saturday"),     # New Year's Eve (a Wednesday)
    ("2023-12-24", "winter_sunday"),       # Christmas Eve on a Sunday stays Sunday
    ("2025-05-29", "summer_sunday"),       # Ascension (summer from 15 May)
    ("2025-10-03", "transition_sunday"),   # German Unity Day
    ("2025-01-06", "winter_workday"),      # Epiphany: a holiday in three states only
    ("2025-06-19", "summer_workday"),      # Corpus Christi: not national
    ("2025-03-20", "winter_workday"), ("2025-03-21", "transition_workday"),  # season edge
    ("2025-05-17", "summer_saturday"), ("2025-09-14", "summer_sunday"),
])
def test_day_types_of_known_dates(date, day_type):
    assert day_type_of(dt.date.fromisoformat(date)) == day_type


def test_calendar_frames_read_profiles_of_their_day_type_and_weather_of_their_date():
    for date in pd.date_range("2025-01-01", "2025-12-31").date:
        ref = reference_date(date)
        assert ref.year == REFERENCE_YEAR and _data_day_type(ref) == day_type_of(date)
        gap = abs((ref - date.replace(year=REFERENCE_YEAR)).days)
        assert min(gap, 365 - gap) <= 7, (date, ref)
    f = make_frames(start="2025-04-21T18:00", end="2025-04-21T18:15")[0]
    assert f.day_type == "transition_sunday" and f.start == pd.Timestamp("2025-04-21 18:00")
    assert f.load_start == pd.Timestamp("2010-04-18 18:00")     # the nearest 2010 Sunday
    assert f.weather_start == pd.Timestamp("2010-04-21 18:00")  # the TRY of 21 April
    assert temperature_c(f.start) == temperature_c(f.weather_start)
    leap = make_frames(start="2024-02-29T12:00", end="2024-02-29T13:00", resolution_min=60)[0]
    assert leap.weather_start == pd.Timestamp("2010-02-28 12:00")
    assert temperature_c(leap.start, 1.0) == temperature_c(pd.Timestamp("2010-02-28 12:00"), 1.0)


def test_calendar_profiles_equal_the_reference_days(tmp_path):
    from flexcore.district.profiles import BuildingProfiles
    from flexcore.grid.district_grid import building_table

    table = building_table("grid_loads", SIMBENCH).head(3)
    bp = BuildingProfiles.from_table(table, seed=3, pv_penetration=1.0)
    cal = make_frames(start="2025-12-24T11:00", end="2025-12-24T13:00", resolution_min=60)
    pf = bp.for_frames(cal)
    for i, f in enumerate(cal):
        load_day = make_frames(start=f.load_start, end=f.load_start + pd.Timedelta(hours=1),
                               resolution_min=60)[0]
        assert f.load_start.date() == dt.date(2010, 12, 18)     # a 2010 winter Saturday
        for k, b in enumerate(bp.building_ids):
            assert pf.load_p_mw[i, k] == bp.load_mw(b, load_day) > 0
            pv_day = dataclasses.replace(f, load_ref=None, weather_ref=None,
                                         start=f.weather_start)
            assert pf.pv_p_mw[i, k] == bp.pv_mw(b, pv_day) > 0  # noon PV of 24 Dec


def test_calendar_clock_year_and_round_trip():
    year = FrameClock.for_calendar("2025-01-01", "2026-01-01")
    assert len(year) == 35040 and year.calendar and year.until_s == 35040 * 900
    t = year.table()
    assert t["timestamp"].iloc[-1].isoformat() == "2025-12-31T23:45:00+01:00"
    assert t.groupby("date").size().eq(96).all() and t["date"].nunique() == 365
    assert (t.loc[t["date"] == dt.date(2025, 4, 21), "day_type"] == "transition_sunday").all()
    assert year.new_day(96) and not year.new_day(95)
    assert year.state_key(year.frames[0]) is None                 # carry: never fresh units
    sub = FrameClock.for_calendar("2025-12-20", "2026-01-03", day_types=["winter_sunday"],
                                  slots=[72], resolution_min=15, unit_state="reset_daily")
    assert [f.start.strftime("%m-%d") for f in sub.frames] == [
        "12-21", "12-25", "12-26", "12-28", "01-01"]
    assert [f.index for f in sub.frames] == list(range(5))
    assert FrameClock.from_dict(sub.to_dict()) == sub
    assert sub.state_key(sub.frames[1]) == dt.date(2025, 12, 25)
    with pytest.raises(ClockError, match="no frame"):
        FrameClock.for_calendar("2025-06-02", "2025-06-03", day_types=["winter_sunday"])


def _fleet(clock: FrameClock):
    from simulators.fpu_sim import FPUSim

    sim = FPUSim()
    sim.create(1, "Fleet", grid=SIMBENCH, buildings="grid_loads", seed=1, pv_penetration=0.6,
               clock=clock.to_dict(), fpu=[{"class": "battery", "building_types":
                                            ["single_house"], "penetration": 0.2,
                                            "params": {"capacity_kwh": 100.0}}])
    return sim


def _discharge_across_midnight(unit_state: str):
    """Each frame the first battery is dispatched fully upward; returns its SOC after every
    offer and after every dispatch, the dispatched MW and the battery."""
    clock = FrameClock.for_calendar("2025-01-03T23:15", "2025-01-04T00:45",
                                    unit_state=unit_state)
    sim = _fleet(clock)
    before, after, mw = [], [], []
    for k in range(len(clock)):
        t = clock.time_of(k)
        sim.step(t, {}, None)                 # offers (fresh units here if due)
        uid = sim.units[0].unit_id
        before.append(sim.units[0].soc)
        bid = sim._pseudo[f"{uid}:up"]
        volume = next(o["volume_mw"] for o in sim._out["offers"] if o["bid_id"] == bid)
        sim.step(t, {"Fleet": {"setpoint[MW]": {"TSO": {bid: volume}}}}, None)
        mw.append(sim._out["P[MW]"][uid])
        after.append(sim.units[0].soc)
    return before, after, mw, sim.units[0]


def test_battery_soc_is_continuous_across_midnight_in_a_calendar_run():
    before, after, mw, bat = _discharge_across_midnight("carry")
    assert len(before) == 6 and all(p > 0 for p in mw)
    for k in range(6):                      # by hand: SOC -= P dt / eta / capacity
        expected = before[k] - mw[k] * 1000 * 0.25 / bat.eta_discharge / bat.capacity_kwh
        assert after[k] == pytest.approx(expected, abs=1e-12)
    assert before[1:] == after[:-1]         # frame 3 is 2025-01-04 00:00: no reset
    assert after[-1] < after[2] < before[0]
    fresh, _, _, _ = _discharge_across_midnight("reset_daily")
    assert fresh[3] == fresh[0] != after[2]  # fresh units on the new date: SOC back to start


def test_short_calendar_run_across_a_day_boundary(tmp_path):
    from scenarios.runner import run_scenario

    toml = tmp_path / "cal.toml"
    toml.write_text(f"""[scenario]
grid = "{SIMBENCH}"
buildings = "grid_loads"
seed = 4
[calendar]
start = "2025-01-03T23:30"
end = 2025-01-04T00:30:00
[request]
default_mw = 0.05
[results]
plots = false
""")
    cfg = load_config(toml)
    run_dir, summary = run_scenario(cfg, out=tmp_path / "run")
    f = pd.read_parquet(run_dir / "timeseries" / "frames.parquet")
    assert [t.isoformat() for t in f["timestamp"]] == [
        "2025-01-03T23:30:00+01:00", "2025-01-03T23:45:00+01:00",
        "2025-01-04T00:00:00+01:00", "2025-01-04T00:15:00+01:00"]
    assert f["day_type"].tolist() == ["winter_workday"] * 2 + ["winter_saturday"] * 2
    assert summary["frames"] == 4 and (f["status"] == "optimal").all()
    assert f["delivered_mw"].tolist() == pytest.approx([0.05] * 4)
    again = load_config(run_dir / "config.resolved.toml")
    assert again.calendar == cfg.calendar and again.clock() == cfg.clock()


@pytest.mark.parametrize("calendar,message", [
    ({"year": 2025, "start": "2025-01-01"}, r"\[calendar\] year: give either year or start"),
    ({"start": "2025-01-02", "end": "2025-01-01"}, r"\[calendar\] end: .* must be after start"),
    ({"start": "2025-01-01"}, r"\[calendar\] end: missing"),
    ({"year": "2025"}, r"\[calendar\] year: expected int"),
    ({"year": 1066}, r"\[calendar\] year: expected 1900..2199"),
    ({"year": 2025, "unit_state": "keep"}, r"\[calendar\] unit_state: expected one of"),
    ({"year": 2025, "days": 3}, r"\[calendar\] unknown key\(s\) \['days'\]"),
    ({"start": "2025-01-01T10:10", "end": "2025-01-02"}, r"\[calendar\] start: .* 15-min grid"),
    ({"start": "yesterday", "end": "2025-01-02"}, r"\[calendar\] start: expected a date"),
    ({"start": dt.datetime(2025, 1, 1, tzinfo=dt.UTC), "end": "2025-01-02"},
     r"\[calendar\] start: give a local time"),
])
def test_calendar_config_errors_name_the_key(calendar, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"scenario": {}, "calendar": calendar})


def test_calendar_config_year_and_day_type_subsets():
    doc = tomllib.loads(open("scenarios/bergwald.toml", "rb").read().decode())
    cfg = parse_config(doc | {"calendar": {"year": 2025}})
    assert cfg.calendar.start == "2025-01-01T00:00:00" and cfg.calendar.unit_state == "carry"
    sub = dataclasses.replace(cfg, day_types=("summer_sunday",), slots=(72,))
    clock = sub.clock()
    assert {f.day_type for f in clock.frames} == {"summer_sunday"}
    # 18 Sundays 15 May .. 14 Sep 2025, Ascension and Whit Monday: one frame a day
    assert len(clock) == 18 + 2 and all(f.slot == 72 for f in clock.frames)


def test_run_calendar_flag(tmp_path, capsys):
    from scenarios.cli import main

    toml = tmp_path / "s.toml"
    toml.write_text(f'[scenario]\ngrid = "{SIMBENCH}"\nbuildings = "grid_loads"\n')
    assert main(["run", "--check", "--calendar", "2024", str(toml)]) == 0
    assert capsys.readouterr().out.strip().endswith("calendar 2024-01-01..2025-01-01: "
                                                    "35136 frame(s)")          # a leap year
    assert main(["run", "--check", "--calendar", "2025-01-01..2025-01-08", "--day-types",
                 "winter_sunday", "--frames", "72-75", str(toml)]) == 0
    assert capsys.readouterr().out.strip().endswith(": 8 frame(s)")  # New Year, 5 January
    assert main(["run", "--check", "--calendar", "2025-02-01..2025-01-01", str(toml)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calendar: [calendar] end: " in err


# --------------------------------------------- recording a long run: buffered, read in parts
def _unit_inputs(k: int, ids: list[str]) -> dict:
    """Hand-made Recorder inputs of frame ``k``: a clearing and a unit table whose numbers
    encode frame and unit (applied_mw = k + j / 1000)."""
    m = len(ids)
    units = {"unit_id": ids, "building": [u.split(".")[0] for u in ids],
             "class": ["battery"] * m, "baseline_mw": [0.0] * m,
             "offered_up_mw": [0.01] * m, "offered_down_mw": [-0.01] * m,
             "requested_mw": [0.0] * m, "applied_mw": [k + j / 1000 for j in range(m)],
             "p_mw": [0.0] * m, "profile_mw": [0.0] * m, "clipped": [False] * m,
             "clip_reason": [""] * m, "flagged": [False] * m,
             "state": {"soc": [0.5] * m}}
    clearing = {"status": "optimal", "dispatched": True, "request_mw": float(k),
                "delivered_mw": float(k), "cost_eur_per_h": 1.0}
    return {"Recorder": {a: {"src": x} for a, x in
                         {"clearing": clearing, "units": units}.items()}}


def test_recorder_writes_every_n_frames_and_reads_a_year_table_in_parts(tmp_path):
    """Across midnight of a calendar clock, a Recorder that writes every 3 frames: frames.csv
    lists only written frames and the streams hold exactly their rows; an interrupt writes
    the buffered finished frames; read_table of the Parquet files and of the streams returns
    the same rows for columns= and frames= as the filtered whole table."""
    from scenarios.results import Recorder, read_table

    clock = FrameClock.for_calendar(start="2025-01-01T23:00", end="2025-01-02T01:00")
    ids = [f"B{j:02d}.battery" for j in range(70)]   # > 64 values: the NumPy path too

    def recorder(run_dir):
        rec = Recorder()
        rec.init("Rec")
        rec.create(1, "Recorder", run_dir=str(run_dir), clock=clock.to_dict(),
                   flush_frames=3, flush_s=3600)
        return rec

    rec = recorder(tmp_path / "killed")
    for k in range(6):   # frames 0..4 finished (a frame is recorded when the next begins)
        rec.step(clock.time_of(k), _unit_inputs(k, ids), None)
    listed = pd.read_csv(tmp_path / "killed" / "timeseries" / "frames.csv")["frame"].tolist()
    assert listed == [0, 1, 2]                        # 3 and 4 are still in memory
    units = read_table(tmp_path / "killed", "units")
    assert sorted(set(units["frame"])) == [0, 1, 2] and len(units) == 3 * len(ids)
    assert units["applied_mw"].tolist() == [k + j / 1000 for k in range(3)
                                            for j in range(len(ids))]
    rec.close_on_error()                              # Ctrl-C: the buffered frames written
    ts = tmp_path / "killed" / "timeseries"
    assert pd.read_csv(ts / "frames.csv")["frame"].tolist() == [0, 1, 2, 3, 4]
    streams = read_table(tmp_path / "killed", "units")
    assert sorted(set(streams["frame"])) == [0, 1, 2, 3, 4]
    assert not list(ts.glob("*.parquet"))

    rec = recorder(tmp_path / "done")
    for k in range(len(clock)):
        rec.step(clock.time_of(k), _unit_inputs(k, ids), None)
    rec.finalize()
    whole = read_table(tmp_path / "done", "units")
    assert len(whole) == len(clock) * len(ids)
    frames = read_table(tmp_path / "done", "frames")
    assert frames["timestamp"].dt.date.astype(str).tolist() == ["2025-01-01"] * 4 + [
        "2025-01-02"] * 4
    cols, keep = ["unit_id", "applied_mw", "frame"], [1, 4, 5, 99]
    expect = whole.loc[whole["frame"].isin(keep), cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(read_table(tmp_path / "done", "units", columns=cols,
                                             frames=keep), expect)
    got = read_table(tmp_path / "killed", "units", columns=cols, frames=keep)
    pd.testing.assert_frame_equal(got, expect[expect["frame"] <= 4].reset_index(drop=True))
    assert read_table(tmp_path / "done", "units", frames=[]).empty
    with pytest.raises(ValueError, match="no column"):
        read_table(tmp_path / "done", "units", columns=["soc"])
