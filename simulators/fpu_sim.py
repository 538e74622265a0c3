"""FPUSim: all flexibility units of the district (any plug-in class), one ``Fleet`` entity.

Per frame of the scenario's clock (mosaik time t = frame index * ``clock.step_s``; the units
step over frames of the clock's length, ``frame.duration_h``), hybrid simulator:

1. self-scheduled step at t: (fresh, seeded units where ``clock.state_key`` changes: at
   each day type; calendar runs carry unit states across days unless ``reset_daily``)
   outputs ``offers`` (list of ``{bid_id, volume_mw, price_eur_per_mwh, min_mw,
   indivisible}``; ``bid_id`` is the bid's pseudonym, see below), ``P_base[MW]`` per unit and
   ``dP_base[MW]`` per building (sum of baseline - profile).
2. triggered step at the same time t by ``setpoint[MW]`` ({bid pseudonym: MW deviation}):
   dispatches (each unit gets the sum of its bids' set-points; clipping reported in
   ``clipped``), outputs the actual ``P[MW]`` per unit and ``dP[MW]`` per building (sum of
   power - profile: the grid adds it to the building's profile net injection), then steps
   the units; ``units`` is the per-unit record of the frame (baseline, offers, requested
   and applied activation, clipping, ``state()`` after the step; :func:`unit_records`),
   which the Recorder writes as the run folder's unit table.

Bidder privacy: this simulator is the aggregator. Inside it a bid is ``"<unit_id>:up"`` /
``"<unit_id>:down"``; outside it only a per-run pseudonym ``b<16 hex>`` = HMAC-SHA256 of
that id under a secret drawn from :mod:`secrets` at create (not derived from the seed: two
runs with the same seed give the same numbers under different ids). The TSO sees pseudonyms
with volumes and prices and sends set-points back by pseudonym; the extra methods give the
private maps: ``catalog()`` bid pseudonym -> building (the DSO's, for its linearizer) and
``unit_map()`` bid pseudonym -> unit id and direction (the run folder's, for unit-level
results).

Speed: the units of the default classes (battery, EV, heat pump, flexible load, PV
curtailment, exactly those classes with the district's context) run as numpy arrays, one
group per class (:mod:`flexcore.fpu.fleet`: the same formulas, the same bits as the unit
methods; the unit objects keep their state, read before and written after every frame);
every other unit, plug-in or external, runs object by object as the contract describes.
``ARRAYS = False`` runs all of them as objects (the reference of tests/test_fleet_arrays.py).

External units (mosaik simulators of their own): one ``Port`` entity per unit, created after
the Fleet with the unit's id and building (see :mod:`simulators.fpu_ports` for its
attributes); a port's unit takes part in the fleet's offers, pseudonyms, dispatch and
``dP[MW]`` like an in-process unit. Without ports the fleet runs as before.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections import defaultdict

import numpy as np

from flexcore.district.clock import FrameClock
from flexcore.fpu.base import _TOL_MW as TOL_MW
from flexcore.fpu.base import MIN_OFFER_MW, FlexibilityUnit, contract_violation, violation_reason
from flexcore.fpu.fleet import _max, _min, array_groups
from flexcore.grid.district_grid import building_table
from simulators import FrameSimulator, building_profiles, meta_from_table
from simulators.fpu_ports import PORT_MODEL, ExternalUnit

DIRECTIONS = ("up", "down")
#: run the default unit classes as arrays (flexcore.fpu.fleet); False: every unit as an
#: object (the reference the arrays are tested against)
ARRAYS = True
ATTRS_OUT = (
    ("offers", "bids of the frame (list of dicts, per-run bid pseudonyms)"),
    ("P_base[MW]", "baseline injection per unit"),
    ("dP_base[MW]", "sum of (baseline - profile) per building: part of the fixed injections"),
    ("P[MW]", "actual injection per unit after dispatch"),
    ("dP[MW]", "sum of (power - profile) per building after dispatch"),
    ("clipped", "unit_id -> reason for set-points clipped to the feasible range"),
    ("flagged", "unit_id -> reason: units that broke the plug-in contract in the frame "
                "(neutralised: no offers, kept at baseline)"),
    ("units", "per-unit record of the frame after dispatch (columns, see unit_records)"),
)
ATTRS_IN = (("setpoint[MW]", "bid pseudonym -> cleared activation (MW deviation)"),)
META = meta_from_table({"Fleet": {
    "public": True,
    "params": ["grid", "buildings", "seed", "pv_penetration", "clock", "fpu"],
    "attrs": [a for a, _ in ATTRS_OUT + ATTRS_IN],
    "trigger": [a for a, _ in ATTRS_IN],
    "non-persistent": [a for a, _ in ATTRS_OUT],
}, "Port": PORT_MODEL}, sim_type="hybrid", extra_methods=("catalog", "unit_map"))


class FPUSim(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.units = None
        self._offered_at = -1
        self._ports: dict[str, ExternalUnit] = {}   # Port eid -> its unit
        self._input_problems: dict[str, str] = {}   # unit id -> bad port input of the frame
        self._port_out: dict[str, dict] = {}

    def create(self, num, model, **params):
        if model == "Port":
            return self._create_ports(num, **params)
        return self._create_fleet(num, model, **params)

    def _create_fleet(self, num, model, *, grid: str, buildings: str, seed: int,
                      pv_penetration: float, clock: dict, fpu: list[dict] | None = None):
        if num != 1 or self.units is not None:
            raise ValueError("FPUSim holds exactly one Fleet entity")
        from flexcore.fpu.assign import DEFAULT_FPU_CONFIG
        from flexcore.fpu.registry import parse_fpu_config

        self._table = building_table(buildings, grid)
        self._profiles = building_profiles(self._table, seed=seed, pv_penetration=pv_penetration)
        self._specs = parse_fpu_config({"fpu": fpu} if fpu else DEFAULT_FPU_CONFIG)
        self._seed = int(seed)
        self._secret = secrets.token_bytes(32)  # per run; never derived from the seed
        self.clock = FrameClock.of(clock)
        self.frames = self.clock.frames
        self._reset()
        # the maps stay fixed for the run: a day type's fresh units keep their ids
        self._pseudo = {f"{u.unit_id}:{d}": self._pseudonym(f"{u.unit_id}:{d}")
                        for u in self.units for d in DIRECTIONS}
        self._unit_of = {self._pseudo[f"{u.unit_id}:{d}"]: u.unit_id
                         for u in self.units for d in DIRECTIONS}
        return [{"eid": "Fleet", "type": model}]

    def _reset(self) -> None:
        from flexcore.fpu.assign import assign_units

        self.units = assign_units(self._table, profiles=self._profiles, config=self._specs,
                                  seed=self._seed)
        self._day = None
        self._plan_key = None

    def _create_ports(self, num, *, unit_id: str, building: str):
        """One ``Port`` per external unit (after the Fleet, before ``catalog()``)."""
        unit_id, building = str(unit_id), str(building)
        if num != 1 or self.units is None:
            raise ValueError("create Ports one at a time, after the Fleet")
        if building not in set(self._table["building_id"].astype(str)):
            raise ValueError(f"Port {unit_id!r}: {building!r} is not a building of the district")
        if unit_id in {u.unit_id for u in self._members}:
            raise ValueError(f"Port {unit_id!r}: a unit with this id exists already")
        eid = f"Port-{len(self._ports)}"
        self._ports[eid] = ExternalUnit(unit_id, building)
        for d in DIRECTIONS:
            self._pseudo[f"{unit_id}:{d}"] = p = self._pseudonym(f"{unit_id}:{d}")
            self._unit_of[p] = unit_id
        return [{"eid": eid, "type": "Port"}]

    @property
    def _members(self) -> list:
        """The fleet's units: the in-process ones, then the ports' external units."""
        return self.units + list(self._ports.values()) if self._ports else self.units

    def _receive_ports(self, inputs: dict) -> None:
        """The external units' values for the frame (bad input: flagged in ``_offer``)."""
        self._input_problems = {}
        self._port_out = {eid: {} for eid in self._ports}  # no set-point before dispatch
        for eid, unit in self._ports.items():
            unit.receive(inputs.get(eid, {}))
            if unit.problem:
                self._input_problems[unit.unit_id] = unit.problem

    def get_data(self, outputs):
        if not self._ports:
            return super().get_data(outputs)
        ports = {e: a for e, a in outputs.items() if e in self._ports}
        data = super().get_data({e: a for e, a in outputs.items() if e not in ports})
        for eid, attrs in ports.items():
            out = self._port_out.get(eid, {})
            data[eid] = {a: out[a] for a in attrs if a in out}
        return data

    def _pseudonym(self, bid: str) -> str:
        return "b" + hmac.new(self._secret, bid.encode(), hashlib.sha256).hexdigest()[:16]

    def catalog(self) -> list[dict]:
        """The DSO's private map: every bid of the fleet as ``{bid_id, building_id}`` (bid
        pseudonyms, in unit order)."""
        return [{"bid_id": self._pseudo[f"{u.unit_id}:{d}"], "building_id": u.building_id}
                for u in self._members for d in DIRECTIONS]

    def unit_map(self) -> dict[str, dict]:
        """The run folder's private map: bid pseudonym -> ``{unit_id, building_id,
        direction}``."""
        return {self._pseudo[f"{u.unit_id}:{d}"]: {"unit_id": u.unit_id,
                                                   "building_id": u.building_id,
                                                   "direction": d}
                for u in self._members for d in DIRECTIONS}

    def _unit_setpoints(self, setpoints: dict[str, float]) -> dict[str, float]:
        """Set-points by bid pseudonym -> by unit id (the sum of the unit's bids)."""
        out: dict[str, float] = {}
        for b, x in setpoints.items():
            u = self._unit_of[b]
            out[u] = out.get(u, 0.0) + x
        return out

    # ------------------------------------------------------------------ steps
    def step(self, time, inputs, max_advance):
        frame = self.clock.frame_at(time)
        setpoints = {}
        for attrs in inputs.values():
            for values in attrs.get("setpoint[MW]", {}).values():
                setpoints.update(values)
        if self._offered_at != time:
            if self._ports:
                self._receive_ports(inputs)
            self._offer(frame)  # offers already public (pseudonyms)
            self._offered_at = time
        else:
            self._dispatch(frame, self._unit_setpoints(setpoints))
            if self._ports:
                self._port_out = {eid: {"setpoint[MW]": u.applied_mw}
                                  for eid, u in self._ports.items()}
        return time + self.clock.step_s

    def _plan(self) -> tuple[list, list[tuple], list[int]]:
        """(members, array groups with their positions, positions run object by object)
        for the current members (rebuilt after a reset or a new port)."""
        members = self._members
        key = (id(self.units), len(members))
        if getattr(self, "_plan_key", None) != key:
            groups = array_groups(self.units, self._profiles) if ARRAYS else []
            grouped = {int(k) for _, pos in groups for k in pos}
            self._plan_cache = (members, groups,
                                [k for k in range(len(members)) if k not in grouped])
            self._plan_key = key
            self._layout = _Layout(members, self._pseudo)
            self._cached = None
        return self._plan_cache

    def _evaluate(self, frame) -> tuple[list, list, list, list, list, dict[int, str]]:
        """The array units' baseline, profile part, feasible range (down, up) and prices
        (up, down) as lists over all members (NaN where a unit runs as an object), and
        {position: reason} for the array units that break the contract."""
        vals, bad = self._evaluate_arrays(frame)
        return [v.tolist() for v in vals] + [bad]

    def _evaluate_arrays(self, frame) -> tuple[list[np.ndarray], dict[int, str]]:
        """:meth:`_evaluate` as arrays over all members; keeps each group's values for
        the frame's dispatch (:attr:`_cached`: the group's state does not change between
        the two steps of a frame)."""
        members, groups, _ = self._plan()
        n = len(members)
        vals = [np.full(n, np.nan) for _ in range(6)]
        bad: dict[int, str] = {}
        per_group = []
        for group, pos in groups:
            group.pull()
            b, p, d, u = group.evaluate(frame)
            per_group.append((b, p, d, u))
            for arr, x in zip(vals, (b, p, d, u, group.price_up, group.price_down)):
                arr[pos] = x
            ok = (np.isfinite(b) & np.isfinite(p) & np.isfinite(d) & np.isfinite(u)
                  & (d <= TOL_MW) & (u >= -TOL_MW))
            for j in np.flatnonzero(~ok):
                k = int(pos[j])
                bad[k] = violation_reason(float(b[j]), float(p[j]), float(d[j]), float(u[j]))
        self._cached = (frame.index, id(self.units), per_group, None)
        return vals, bad

    def _offer(self, frame) -> None:
        key = self.clock.state_key(frame)  # day type; calendar runs: None (carry) or date
        if self._day is not None and self._day != key:
            self._reset()
        self._day = key
        members, _, objects = self._plan()
        vals, bad = self._evaluate_arrays(frame)
        if not objects and not bad:  # every unit in an array group, all within the contract
            self._offer_arrays(vals)
            return
        bl, pl, dl, ul, pup, pdown = (v.tolist() for v in vals)
        objects = set(objects)
        public, base, dbase, offered = [], {}, defaultdict(float), {}
        self._flagged = {}
        pseudo = self._pseudo
        for k, u in enumerate(members):
            uid = u.unit_id
            if k not in objects and k not in bad:  # an array unit within the contract
                b, up, down = bl[k], ul[k], dl[k]
                if up >= MIN_OFFER_MW:
                    public.append({"bid_id": pseudo[f"{uid}:up"], "volume_mw": up,
                                   "price_eur_per_mwh": pup[k], "min_mw": 0.0,
                                   "indivisible": False})
                if down <= -MIN_OFFER_MW:
                    public.append({"bid_id": pseudo[f"{uid}:down"], "volume_mw": down,
                                   "price_eur_per_mwh": pdown[k], "min_mw": 0.0,
                                   "indivisible": False})
                if up >= MIN_OFFER_MW or down <= -MIN_OFFER_MW:  # as offered_by_unit sums
                    offered[uid] = (0.0 + up if up >= MIN_OFFER_MW else 0.0,
                                    0.0 + down if down <= -MIN_OFFER_MW else 0.0)
                base[uid] = b
                dbase[u.building_id] += b - pl[k]
                continue
            if k in objects:
                reason = self._input_problems.get(uid) or contract_violation(u, frame)
                unit_offers = [] if reason else [
                    (o.direction, o.volume_mw, o.price_eur_per_mwh, o.min_mw, o.indivisible)
                    for o in u.offers(frame)]
            else:  # an array unit that breaks the contract
                reason, unit_offers = bad[k], []
            if reason:  # flag and neutralise: no offers, baseline (or profile) injection
                self._flagged[uid] = reason
            for d, v, price, min_mw, indivisible in unit_offers:
                public.append({"bid_id": pseudo[f"{uid}:{d}"], "volume_mw": v,
                               "price_eur_per_mwh": price, "min_mw": min_mw,
                               "indivisible": indivisible})
                up, down = offered.get(uid, (0.0, 0.0))  # as offered_by_unit sums them
                v = float(v)
                offered[uid] = (up + v, down) if v > 0 else (up, down + v)
            if k in objects:
                if reason:
                    b, prof = _neutral_power_mw(u, frame), _neutral_profile_mw(u, frame)
                else:
                    b, prof = u.baseline_mw(frame), u.profile_mw(frame)
            elif reason:
                b, prof = _neutral(bl[k], pl[k])
            else:
                b, prof = bl[k], pl[k]
            base[uid] = b
            dbase[u.building_id] += b - prof
        self._out = {"offers": public, "P_base[MW]": base, "dP_base[MW]": dict(dbase),
                     "flagged": dict(self._flagged)}
        self._base, self._offered = base, offered

    def _offer_arrays(self, vals: list[np.ndarray]) -> None:
        """:meth:`_offer` when every member runs in an array group within the contract:
        the same offers, baselines and sums (same order, same bits), built from arrays."""
        lay = self._layout
        bl, pl, dl, ul, pup, pdown = vals
        up_ok, down_ok = ul >= MIN_OFFER_MW, dl <= -MIN_OFFER_MW
        ok = np.empty(2 * len(bl), bool)    # the bids in member order, up before down
        ok[0::2], ok[1::2] = up_ok, down_ok
        volume = np.empty(2 * len(bl))
        volume[0::2], volume[1::2] = ul, dl
        price = np.empty(2 * len(bl))
        price[0::2], price[1::2] = pup, pdown
        sel = np.flatnonzero(ok)
        self._out = {
            "offers": [{"bid_id": b, "volume_mw": v, "price_eur_per_mwh": x, "min_mw": 0.0,
                        "indivisible": False}
                       for b, v, x in zip(lay.bids[sel].tolist(), volume[sel].tolist(),
                                          price[sel].tolist())],
            "P_base[MW]": dict(zip(lay.ids, bl.tolist())),
            "dP_base[MW]": lay.building_sums(bl - pl), "flagged": {}}
        self._flagged = {}
        self._base = self._out["P_base[MW]"]
        self._offered = None
        # as offered_by_unit sums a unit's bids (0.0 + x: -0.0 becomes 0.0)
        self._offered_cols = (np.where(up_ok, 0.0 + ul, 0.0).tolist(),
                              np.where(down_ok, 0.0 + dl, 0.0).tolist())
        self._cached = self._cached[:3] + (bl,)

    def _dispatch(self, frame, setpoints: dict[str, float]) -> None:
        members, groups, objects = self._plan()
        c = self._cached
        if (not objects and not getattr(self, "_flagged", None) and c is not None
                and c[3] is not None and c[:2] == (frame.index, id(self.units))):
            if self._dispatch_arrays(frame, setpoints, groups, c[2], c[3]):
                return
        n = len(members)
        # by member position: power, profile part, applied activation (None: flagged),
        # clip reason ("" : not clipped)
        pw: list = [0.0] * n
        pr: list = [0.0] * n
        act: list = [None] * n
        why: list = [""] * n
        flagged = getattr(self, "_flagged", {})
        for k in objects:
            u = members[k]
            if u.unit_id in flagged:  # neutralised: no activation, advanced at baseline
                pw[k], pr[k] = _neutral_power_mw(u, frame), _neutral_profile_mw(u, frame)
                u.advance(frame, pw[k])
            else:
                d = u.dispatch(frame, float(setpoints.get(u.unit_id, 0.0)))
                why[k], act[k] = (d.reason if d.clipped else ""), d.applied_mw
                pw[k], pr[k] = u.power_mw(frame), u.profile_mw(frame)
                u.step(frame)
        for group, pos in groups:
            self._dispatch_group(group, pos, frame, setpoints, flagged, pw, pr, act, why)
        power, profile, dp, clipped, applied = {}, {}, defaultdict(float), {}, {}
        for k, u in enumerate(members):
            uid = u.unit_id
            if why[k]:
                clipped[uid] = why[k]
            if act[k] is not None:
                applied[uid] = act[k]
            power[uid], profile[uid] = pw[k], pr[k]
            dp[u.building_id] += pw[k] - pr[k]
        self._out = {"P[MW]": power, "dP[MW]": dict(dp), "clipped": clipped,
                     "flagged": dict(flagged),
                     "units": unit_records(members, base=getattr(self, "_base", {}),
                                           offered=self._offered_by_unit(),
                                           setpoints=setpoints, applied=applied, power=power,
                                           profile=profile, clipped=clipped, flagged=flagged,
                                           state=state_columns(members, groups, objects))}

    def _dispatch_arrays(self, frame, setpoints: dict[str, float], groups: list,
                         evaluated: list, baseline: np.ndarray) -> bool:
        """:meth:`_dispatch` after :meth:`_offer_arrays` of the same frame (every member in
        an array group, none flagged): the same clipping, powers, sums and unit record
        from the offer step's values. False (nothing done) for a non-finite set-point
        (the general path raises its error)."""
        lay = self._layout
        n = len(lay.ids)
        sp = np.zeros(n)
        pos_of = lay.pos
        for uid, x in setpoints.items():
            k = pos_of.get(uid)
            if k is not None:
                sp[k] = float(x)
        if not np.isfinite(sp).all():
            return False
        power, profile, act = np.empty(n), np.empty(n), np.empty(n)
        lo, hi = np.empty(n), np.empty(n)
        above, below = np.zeros(n, bool), np.zeros(n, bool)
        for (group, pos), (b, p, d, u) in zip(groups, evaluated):
            s = sp[pos]
            ab, be = s > u + TOL_MW, s < d - TOL_MW
            a = np.where(ab, u, np.where(be, d, _min(_max(s, d), u)))
            pw = b + a
            group.advance(frame, pw.copy())
            group.push()
            power[pos], profile[pos], act[pos] = pw, p, a
            lo[pos], hi[pos], above[pos], below[pos] = d, u, ab, be
        ids = lay.ids
        pwl, prl, al = power.tolist(), profile.tolist(), act.tolist()
        reasons = [""] * n
        clipped = {}
        for k in np.flatnonzero(above | below).tolist():
            reasons[k] = (f"above the upward limit {hi[k]:.6g} MW" if above[k] else
                          f"below the downward limit {lo[k]:.6g} MW")
            clipped[ids[k]] = reasons[k]
        power_d = dict(zip(ids, pwl))
        up, down = self._offered_cols
        units = {"unit_id": list(ids), "building": list(lay.buildings),
                 "class": list(lay.classes), "baseline_mw": baseline.tolist(),
                 "offered_up_mw": up, "offered_down_mw": down, "requested_mw": sp.tolist(),
                 "applied_mw": al, "p_mw": pwl, "profile_mw": prl,
                 "clipped": (above | below).tolist(), "clip_reason": reasons,
                 "flagged": [False] * n,
                 "state": state_columns(self._members, groups, [])}
        self._out = {"P[MW]": power_d, "dP[MW]": lay.building_sums(power - profile),
                     "clipped": clipped, "flagged": {}, "units": units}
        return True

    def _offered_by_unit(self) -> dict:
        """unit id -> (offered up, offered down) of the frame's offer step."""
        offered = getattr(self, "_offered", {})
        if offered is None:  # the offer step ran on arrays (_offer_arrays)
            up, down = self._offered_cols
            offered = dict(zip(self._layout.ids, zip(up, down)))
        return offered

    @staticmethod
    def _dispatch_group(group, pos, frame, setpoints: dict[str, float], flagged: dict,
                        pw: list, pr: list, act: list, why: list) -> None:
        """FlexibilityUnit.dispatch, power_mw and step (or the neutral advance of a flagged
        unit) for the units of an array group at member positions ``pos``; fills the
        lists of :meth:`_dispatch`. (The group read its units' state in the frame's offer
        step; nothing changes them in between.)"""
        b, p, down, up = group.evaluate(frame)
        ids = [u.unit_id for u in group.units]
        bad = [uid in flagged for uid in ids]
        sp = np.array([0.0 if bad[j] else float(setpoints.get(uid, 0.0))
                       for j, uid in enumerate(ids)])
        if not np.isfinite(sp).all():
            j = int(np.flatnonzero(~np.isfinite(sp))[0])
            raise ValueError(f"unit {ids[j]}: set-point must be finite, got {float(sp[j])!r}")
        above, below = sp > up + TOL_MW, sp < down - TOL_MW
        a = np.where(above, up, np.where(below, down, _min(_max(sp, down), up)))
        power = (b + a).tolist()
        bl, pl, al = b.tolist(), p.tolist(), a.tolist()
        for j, k in enumerate(pos.tolist()):
            if bad[j]:
                power[j], pl[j] = _neutral(bl[j], pl[j])
            else:
                act[k] = al[j]
                if above[j]:
                    why[k] = f"above the upward limit {float(up[j]):.6g} MW"
                elif below[j]:
                    why[k] = f"below the downward limit {float(down[j]):.6g} MW"
            pw[k], pr[k] = power[j], pl[j]
        group.advance(frame, np.array(power))
        group.push()


class _Layout:
    """The fixed per-member lists of a fleet plan (for the array paths of FPUSim): unit
    ids, buildings, classes, bid pseudonyms (up, down interleaved), each member's
    building as a position in the order of first appearance (the key order of the
    per-building sums)."""

    def __init__(self, members: list, pseudo: dict[str, str]) -> None:
        self.ids = [u.unit_id for u in members]
        self.pos = {uid: k for k, uid in enumerate(self.ids)}
        self.buildings = [u.building_id for u in members]
        self.classes = [unit_class(u) for u in members]
        self.bids = np.array([pseudo.get(f"{uid}:{d}", "") for uid in self.ids
                              for d in DIRECTIONS], object)
        order = dict.fromkeys(self.buildings)
        self.building_keys = list(order)
        at = {b: i for i, b in enumerate(self.building_keys)}
        self.building_pos = np.array([at[b] for b in self.buildings], np.intp)

    def building_sums(self, x: np.ndarray) -> dict[str, float]:
        """{building: sum of x over its members}, added in member order from 0.0 (as a
        ``defaultdict(float)`` filled member by member)."""
        sums = np.bincount(self.building_pos, weights=x, minlength=len(self.building_keys))
        return dict(zip(self.building_keys, sums.tolist()))


def offered_by_unit(offers: list[dict]) -> dict[str, tuple[float, float]]:
    """unit id -> (offered upward MW >= 0, offered downward MW <= 0), summed over its bids."""
    out: dict[str, tuple[float, float]] = {}
    for o in offers:
        up, down = out.get(o["unit_id"], (0.0, 0.0))
        v = float(o["volume_mw"])
        out[o["unit_id"]] = (up + v, down) if v > 0 else (up, down + v)
    return out


def unit_class(unit) -> str:
    """A unit's class for the unit table: its registry alias (``battery``, ``ev``,
    ``heat_pump``, ...) or, for a plug-in without its own alias, the class name."""
    alias = str(getattr(unit, "alias", "") or "")
    return alias if alias and alias != FlexibilityUnit.alias else type(unit).__name__


def _state_number(x) -> float | None:
    if type(x) is float:  # the common case, as below
        return x if math.isfinite(x) else None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def unit_records(units, *, base: dict, offered: dict, setpoints: dict, applied: dict,
                 power: dict, profile: dict, clipped: dict, flagged: dict,
                 state: dict[str, list] | None = None) -> dict:
    """The fleet's per-unit record of a dispatched frame (the ``units`` output), as columns
    of equal length: ``unit_id, building, class, baseline_mw, offered_up_mw,
    offered_down_mw, requested_mw`` (the set-point sent, sum of the unit's bids),
    ``applied_mw`` (the activation the unit applied, after clipping; 0 for a flagged
    unit), ``p_mw`` (actual injection = baseline + applied), ``profile_mw`` (the part of it
    already in the building profile: the grid sees ``p_mw - profile_mw`` on top of the
    profile; the grid's own figure from :meth:`FPUSim._dispatch`), ``clipped``,
    ``clip_reason``, ``flagged``; and ``state``: key -> values of
    the units' ``state()`` after the frame (None where a unit has no such key or a value
    is not a finite number; given as ``state`` by the array path, :func:`state_columns`)."""
    ids = [u.unit_id for u in units]
    none = (0.0, 0.0)
    ups = [offered.get(uid, none) for uid in ids]
    cols: dict = {
        "unit_id": ids,
        "building": [u.building_id for u in units],
        "class": [unit_class(u) for u in units],
        "baseline_mw": [float(base.get(uid, power[uid])) for uid in ids],
        "offered_up_mw": [up for up, _ in ups],
        "offered_down_mw": [down for _, down in ups],
        "requested_mw": [float(setpoints.get(uid, 0.0)) for uid in ids],
        "applied_mw": [float(applied.get(uid, 0.0)) for uid in ids],
        "p_mw": [power[uid] for uid in ids],
        "profile_mw": [float(profile[uid]) for uid in ids],
        "clipped": [uid in clipped for uid in ids],
        "clip_reason": [clipped.get(uid, "") for uid in ids],
        "flagged": [uid in flagged for uid in ids],
    }
    if state is None:
        states = [u.state() or {} for u in units]
        keys = sorted({k for st in states for k in st})
        state = {k: [_state_number(st[k]) if k in st else None for st in states]
                 for k in keys}
    cols["state"] = state
    return cols


def state_columns(members, groups, objects) -> dict[str, list]:
    """``unit_records``'s ``state`` columns: the array groups' states (the same numbers as
    their units' ``state()``) and ``state()`` of the units run as objects."""
    n = len(members)
    cols: dict[str, list] = {}
    for group, pos in groups:
        for key, arr in group.state().items():
            col = cols.setdefault(key, [None] * n)
            vals = arr.tolist()
            if not np.isfinite(arr).all():
                vals = [x if math.isfinite(x) else None for x in vals]
            for k, x in zip(pos.tolist(), vals):
                col[k] = x
    for k in objects:
        for key, x in (members[k].state() or {}).items():
            cols.setdefault(key, [None] * n)[k] = _state_number(x)
    return {k: cols[k] for k in sorted(cols)}


def _finite_or(x, default: float) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return x if math.isfinite(x) else default


def _neutral_profile_mw(unit, frame) -> float:
    """A flagged unit's profile part (0 if not a finite number)."""
    return _finite_or(unit.profile_mw(frame), 0.0)


def _neutral(baseline_mw: float, profile_mw: float) -> tuple[float, float]:
    """A flagged unit's (power, profile part) from its values, as :func:`_neutral_power_mw`
    and :func:`_neutral_profile_mw` compute them."""
    prof = _finite_or(profile_mw, 0.0)
    return _finite_or(baseline_mw, prof), prof


def _neutral_power_mw(unit, frame) -> float:
    """A flagged unit's power: its baseline if finite, else its profile part (the
    building then injects exactly its profile)."""
    return _finite_or(unit.baseline_mw(frame), _neutral_profile_mw(unit, frame))


def main() -> None:
    from simulators import start_simulation

    start_simulation(FPUSim())


if __name__ == "__main__":
    main()
