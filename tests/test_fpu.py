"""Flexibility units: limits under random set-points, clipping, registry and plug-ins."""
from __future__ import annotations

import math
import textwrap
import tomllib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexcore.district.daytypes import make_frames
from flexcore.fpu import (
    FlexibilityUnit,
    RegistryError,
    UnitContext,
    load_unit_class,
    parse_fpu_config,
)
from flexcore.fpu.assign import assign_units
from flexcore.fpu.battery import HomeBattery
from flexcore.fpu.ev import EVCharger
from flexcore.fpu.flexload import FlexibleLoad
from flexcore.fpu.heatpump import HeatPump
from flexcore.fpu.pv import PVCurtailment

DAY = make_frames(start="2010-01-20", end="2010-01-22")          # two winter days, 15 min
SETPOINTS = st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=len(DAY), max_size=len(DAY))
HYP = settings(max_examples=25, deadline=None)


def _pv(frame) -> float:
    h = frame.start.hour + frame.start.minute / 60
    return max(0.0, 0.008 * math.sin(math.pi * (h - 7) / 11)) if 7 <= h <= 18 else 0.0


def _load(frame) -> float:
    return 0.010 + 0.005 * math.sin(frame.slot / 96 * 2 * math.pi)


CTX = UnitContext(load_mw=_load, pv_mw=_pv, temperature_c=lambda f: -5.0 + 0.1 * f.slot / 4,
                  building={"floor_area_m2": 150.0, "annual_kwh": 60000.0, "type": "shop"})


def run_day(unit: FlexibilityUnit, setpoints, check) -> None:
    """Offer, dispatch a random set-point, step; check offers and the invariant every frame."""
    for frame, sp in zip(DAY, setpoints):
        down, up = unit.feasible_range_mw(frame)
        offers = unit.offers(frame)
        assert sum(o.volume_mw for o in offers if o.volume_mw > 0) <= up + 1e-12
        assert sum(o.volume_mw for o in offers if o.volume_mw < 0) >= down - 1e-12
        base = unit.baseline_mw(frame)
        d = unit.dispatch(frame, sp)
        assert down - 1e-12 <= d.applied_mw <= up + 1e-12
        assert d.clipped == (not down - 1e-9 <= sp <= up + 1e-9)
        assert unit.power_mw(frame) == pytest.approx(base + d.applied_mw)
        unit.step(frame)
        check(unit, frame)


@HYP
@given(SETPOINTS)
def test_battery_soc_limits(setpoints):
    bat = HomeBattery("b", "B1", rng=np.random.default_rng(1), capacity_kwh=10, power_kw=6,
                      soc_min=0.1, soc_max=0.9)
    run_day(bat, setpoints, lambda u, f: (0.1 - 1e-12) <= u.soc <= 0.9 + 1e-12)


def test_battery_offers_full_and_empty():
    frame = DAY[0]
    full = HomeBattery("b", "B1", rng=np.random.default_rng(0), soc_init=0.95)
    assert [o.direction for o in full.offers(frame)] == ["up"]
    empty = HomeBattery("b", "B1", rng=np.random.default_rng(0), soc_init=0.1)
    assert [o.direction for o in empty.offers(frame)] == ["down"]
    assert empty.offers(frame)[0].volume_mw == pytest.approx(-0.005)


def test_dispatch_clips_and_rejects_nan():
    bat = HomeBattery("b", "B1", rng=np.random.default_rng(0), power_kw=5.0)
    d = bat.dispatch(DAY[0], 1.0)
    assert d.clipped and d.applied_mw == pytest.approx(0.005) and "upward" in d.reason
    d = bat.dispatch(DAY[0], 0.002)
    assert not d.clipped and d.applied_mw == 0.002 and d.requested_mw == 0.002
    with pytest.raises(ValueError):
        bat.dispatch(DAY[0], float("nan"))


@HYP
@given(SETPOINTS)
def test_ev_energy_delivered_by_departure(setpoints):
    ev = EVCharger("e", "B1", rng=np.random.default_rng(7), power_kw=11.0)
    departures = {ev.session_window(f.start.date())[1] for f in DAY}
    delivered = []

    def check(u, f):
        assert 0.0 <= u.soc_kwh <= u.capacity_kwh + 1e-9
        if f.end in departures:
            delivered.append(u.remaining_kwh)

    run_day(ev, setpoints, check)
    assert delivered and max(delivered) < 1e-6


def test_ev_bids_depend_on_state():
    ev = EVCharger("e", "B1", rng=np.random.default_rng(7))
    arrival, departure, need = ev.session_window(DAY[0].start.date())
    plugged = [f for f in DAY if arrival <= f.start and f.end <= departure]
    assert plugged and ev.baseline_mw(plugged[0]) < 0
    midnight = ev.offers(DAY[0])            # plugged since the previous evening, charging
    assert [o.direction for o in midnight] == ["up"]     # already at full 11 kW: no "down"
    assert max(abs(o.volume_mw) for o in midnight) <= 0.011 + 1e-12
    assert not EVCharger("e", "B1", rng=np.random.default_rng(7)).offers(
        make_frames(start="2010-01-20 12:00", end="2010-01-20 12:15")[0])   # away at noon


@HYP
@given(SETPOINTS)
def test_heat_pump_comfort_band(setpoints):
    hp = HeatPump("h", "B1", rng=np.random.default_rng(2), context=CTX, t_min=20.0, t_max=23.0)
    run_day(hp, [s / 5 for s in setpoints], lambda u, f: 20.0 - 1e-9 <= u.t_in <= 23.0 + 1e-9)


def test_heat_pump_uses_hplib_cop():
    from flexcore.fpu.heatpump import cop_at
    assert 1.5 <= cop_at(-10) < cop_at(0) < cop_at(10) <= 6.0


@HYP
@given(SETPOINTS)
def test_pv_curtailment_downward_only(setpoints):
    pv = PVCurtailment("p", "B1", rng=np.random.default_rng(0), context=CTX)
    run_day(pv, setpoints, lambda u, f: 0.0 <= u.power_mw(f) <= _pv(f) + 1e-12)
    noon = make_frames(start="2010-01-20 12:30", end="2010-01-20 12:45")[0]
    (offer,) = pv.offers(noon)
    assert offer.volume_mw == pytest.approx(-_pv(noon)) and offer.price_eur_per_mwh == 80.0


@HYP
@given(SETPOINTS)
def test_flexible_load_backlog_bounded(setpoints):
    fl = FlexibleLoad("f", "B1", rng=np.random.default_rng(0), context=CTX, share=0.3)
    bound = fl.max_backlog_kwh
    run_day(fl, [s / 10 for s in setpoints], lambda u, f: abs(u.backlog_kwh) <= bound + 1e-9)


def test_flexible_load_pays_back():
    fl = FlexibleLoad("f", "B1", rng=np.random.default_rng(0), context=CTX)
    fl.dispatch(DAY[0], 1.0)   # postpone as much as possible
    fl.step(DAY[0])
    assert fl.backlog_kwh > 0
    for f in DAY[1:40]:
        fl.step(f)
    assert 0 <= fl.backlog_kwh < 0.1 * fl.max_backlog_kwh


PLUGIN = '''
from flexcore.fpu.base import FlexibilityUnit


class Fridge(FlexibilityUnit):
    """A fridge that can pause its compressor (upward) for one frame at a time."""

    alias = "fridge"

    def __init__(self, unit_id, building_id, *, rng, context=None, power_kw=0.1, price=5.0):
        super().__init__(unit_id, building_id, rng=rng, context=context)
        self.power_kw = power_kw
        self.price_up_eur_per_mwh = price
        self.paused = False

    def baseline_mw(self, frame):
        return -self.power_kw / 1000.0

    def feasible_range_mw(self, frame):
        return 0.0, (0.0 if self.paused else self.power_kw / 1000.0)

    def advance(self, frame, power_mw):
        self.paused = power_mw > self.baseline_mw(frame)

    def state(self):
        return {"paused": float(self.paused)}
'''


def test_custom_plugin_from_toml(tmp_path, monkeypatch):
    (tmp_path / "my_fpus.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tomllib.loads('''
        [[fpu]]
        class = "my_fpus:Fridge"
        building_types = ["single_house"]
        penetration = 1.0
        params = { power_kw = 0.2, price = 7.5 }
    ''')
    table = pd.DataFrame({"building_id": ["A", "B"], "type": ["single_house", "shop"],
                          "annual_kwh": [3000.0, 9000.0], "roof_area_m2": [80.0, 200.0]})
    units = assign_units(table, config=config, seed=1)
    assert [(u.unit_id, type(u).__name__) for u in units] == [("A.fridge", "Fridge")]
    (offer,) = units[0].offers(DAY[0])
    assert offer.volume_mw == pytest.approx(0.0002) and offer.price_eur_per_mwh == 7.5
    units[0].dispatch(DAY[0], 0.0002)
    units[0].step(DAY[0])
    assert units[0].offers(DAY[1]) == []            # paused: no second upward bid


def test_registry_errors():
    assert load_unit_class("battery") is HomeBattery
    assert load_unit_class("flexcore.fpu.ev:EVCharger") is EVCharger
    with pytest.raises(RegistryError, match="no_such_module"):
        load_unit_class("no_such_module:X")
    with pytest.raises(RegistryError, match="NoClass"):
        load_unit_class("flexcore.fpu.battery:NoClass")
    with pytest.raises(RegistryError, match="not a FlexibilityUnit"):
        load_unit_class("flexcore.district.daytypes:Frame")
    with pytest.raises(RegistryError, match="penetration"):
        parse_fpu_config({"fpu": [{"class": "ev", "building_types": ["duplex"], "penetration": 2}]})
    (spec,) = parse_fpu_config({"fpu": [{"class": "battery", "building_types": ["duplex"],
                                         "params": {"bogus": 1}}]})
    with pytest.raises(RegistryError, match="bogus"):
        spec.build("x", "B1", rng=np.random.default_rng(0))


def test_default_assignment_on_district():
    from flexcore.district.buildings import make_bergwald
    from flexcore.district.profiles import BuildingProfiles

    table = make_bergwald()[0]
    profiles = BuildingProfiles.from_table(table, seed=0)
    units = assign_units(table, profiles=profiles, seed=0)
    again = assign_units(table, profiles=profiles, seed=0)
    other = assign_units(table, profiles=profiles, seed=1)
    assert [u.unit_id for u in units] == [u.unit_id for u in again]
    assert [u.unit_id for u in units] != [u.unit_id for u in other]
    assert len({u.unit_id for u in units}) == len(units)
    houses = (table["type"] == "single_house").sum()
    n_bat = sum(u.unit_id.endswith(".battery") and u.building_id in
                set(table.loc[table["type"] == "single_house", "building_id"]) for u in units)
    assert n_bat == round(0.3 * houses)
    evening = make_frames(start="2010-01-20 19:00", end="2010-01-20 19:15")[0]
    noon = make_frames(start="2010-07-21 12:30", end="2010-07-21 12:45")[0]
    for frame, minimum in ((evening, 1.5), (noon, 1.5)):
        total = sum(abs(o.volume_mw) for u in units for o in u.offers(frame))
        assert total > minimum, (frame.start, total)


# ------------------------------------------------------------------ contract checks
class _Ok(FlexibilityUnit):
    def baseline_mw(self, frame):
        return -0.001

    def feasible_range_mw(self, frame):
        return -0.001, 0.001

    def advance(self, frame, power_mw):
        pass


class WrongRange(_Ok):             # forgot the frame argument
    def feasible_range_mw(self):
        return -0.001, 0.001


class WrongAdvance(_Ok):           # advance without the power
    def advance(self, frame):
        pass


class WrongInit(_Ok):              # rng positional, no context
    def __init__(self, unit_id, building_id, rng):
        super().__init__(unit_id, building_id, rng=rng)


class StaticProfile(_Ok):
    @staticmethod
    def profile_mw(frame):
        return 0.0


class Unfinished(FlexibilityUnit):  # advance not implemented
    def baseline_mw(self, frame):
        return 0.0

    def feasible_range_mw(self, frame):
        return 0.0, 0.0


class Swapped(_Ok):                # (up, down): the finding of the swapped tuple
    def feasible_range_mw(self, frame):
        return 0.002, -0.001


class NanBaseline(_Ok):
    def baseline_mw(self, frame):
        return math.nan


@pytest.mark.parametrize("name,method", [
    ("WrongRange", r"feasible_range_mw\(self\) does not match the contract "
                   r"feasible_range_mw\(frame\)"),
    ("WrongAdvance", r"advance\(self, frame\) does not match the contract "
                     r"advance\(frame, power_mw\)"),
    ("WrongInit", r"__init__\(self, unit_id, building_id, rng\) does not match the contract "
                  r"__init__\(unit_id, building_id, \*, rng, context\)"),
    ("StaticProfile", r"profile_mw must be a plain method"),
    ("Unfinished", r"does not implement \['advance'\]"),
])
def test_registry_checks_the_contract_when_loading(name, method):
    """A wrong plug-in stops at load time (scenario parse), naming class and method."""
    with pytest.raises(RegistryError, match=rf"unit class 'test_fpu:{name}': {method}"):
        load_unit_class(f"test_fpu:{name}")
    with pytest.raises(RegistryError, match=f"test_fpu:{name}"):
        parse_fpu_config({"fpu": [{"class": f"test_fpu:{name}", "penetration": 1.0,
                                   "building_types": ["shop"]}]})
    assert load_unit_class("test_fpu:Swapped") is Swapped   # its signatures are right


def test_penetration_with_unknown_building_type_is_rejected():
    with pytest.raises(RegistryError, match=r"#1 \(battery\): unknown building type\(s\) "
                                            r"\['castle'\]; valid: \['single_house'"):
        parse_fpu_config({"fpu": [{"class": "battery", "penetration": {"castle": 0.5}}]})
    with pytest.raises(RegistryError, match=r"#2 \(ev\): unknown building type\(s\) \['hut'\]"):
        parse_fpu_config({"fpu": [{"class": "battery", "building_types": ["duplex"]},
                                  {"class": "ev", "building_types": ["duplex", "hut"]}]})


def test_contract_violation_names_the_broken_part():
    from flexcore.fpu.base import contract_violation

    rng = np.random.default_rng(0)
    frame = DAY[0]
    assert contract_violation(_Ok("u", "B", rng=rng), frame) == ""
    assert contract_violation(HomeBattery("b", "B", rng=rng), frame) == ""
    assert contract_violation(Swapped("u", "B", rng=rng), frame) == (
        "feasible_range_mw returned (0.002, -0.001): needs down <= 0 <= up")
    assert contract_violation(NanBaseline("u", "B", rng=rng), frame) == (
        "baseline_mw is nan, not a finite number")


def test_fpu_sim_flags_and_neutralises_a_unit_that_breaks_the_contract():
    """FPUSim with a swapped-range unit on every school: the schools' units offer nothing,
    stay exactly at their baseline after a dispatch, and are reported with the reason; the
    other units behave as before (same offers as a fleet without the broken units)."""
    from flexcore.district.clock import FrameClock
    from simulators.fpu_sim import FPUSim

    clock = FrameClock.for_day_types(["winter_workday"], (72, 73))
    broken = {"name": "broken", "class": "test_fpu:Swapped", "building_types": ["school"],
              "penetration": 1.0}
    base = [{"class": "battery", "building_types": ["single_house"], "penetration": 0.3}]

    def sim(fpu):
        s = FPUSim()
        s.init("FPUSim-0")
        s.create(1, "Fleet", grid="bergwald", buildings="bergwald", seed=0,
                 pv_penetration=0.6, clock=clock.to_dict(), fpu=fpu)
        return s

    def named_bid(s, pseudonym):
        u = s.unit_map()[pseudonym]
        return f"{u['unit_id']}:{u['direction']}"

    def named(s, offers):
        return [{**o, "bid_id": named_bid(s, o["bid_id"])} for o in offers]

    def pseudo(s, setpoints):
        back = {named_bid(s, p): p for p in s.unit_map()}
        return {back[b]: x for b, x in setpoints.items() if b in back}

    good, bad = sim(base), sim(base + [broken])
    ids = sorted(u.unit_id for u in bad.units if u.unit_id.endswith(".broken"))
    assert ids
    for t in (0, clock.step_s):
        good.step(t, {}, None)
        bad.step(t, {}, None)
        out = bad.get_data({"Fleet": ["offers", "flagged", "P_base[MW]"]})["Fleet"]
        assert sorted(out["flagged"]) == ids
        assert set(out["flagged"].values()) == {
            "feasible_range_mw returned (0.002, -0.001): needs down <= 0 <= up"}
        # bid ids are per-run pseudonyms: compare the offers under the private unit names
        assert named(bad, out["offers"]) == named(
            good, good.get_data({"Fleet": ["offers"]})["Fleet"]["offers"])
        sp = {named_bid(good, o["bid_id"]): o["volume_mw"]
              for o in good.get_data({"Fleet": ["offers"]})["Fleet"]["offers"][:5]}
        sp[f"{ids[0]}:up"] = 0.002                  # a set-point for a flagged unit: ignored
        good.step(t, {"Fleet": {"setpoint[MW]": {"TSO": pseudo(good, sp)}}}, None)
        bad.step(t, {"Fleet": {"setpoint[MW]": {"TSO": pseudo(bad, sp)}}}, None)
        res = bad.get_data({"Fleet": ["P[MW]", "clipped", "flagged", "dP[MW]"]})["Fleet"]
        assert {u: res["P[MW]"][u] for u in ids} == {u: -0.001 for u in ids}   # baseline
        assert not set(res["clipped"]) & set(ids) and sorted(res["flagged"]) == ids
        ref = good.get_data({"Fleet": ["P[MW]", "dP[MW]"]})["Fleet"]
        assert {u: p for u, p in res["P[MW]"].items() if u not in ids} == ref["P[MW]"]
