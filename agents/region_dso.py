"""RegionDSO: a mosaik simulator holding many DSOs of a region, each with its private model.

Models: ``LV`` (one entity per LV DSO; ``create(n, "LV", dsos=[spec, ...])``), ``MV`` (the
MV DSO; ``create(1, "MV", dso=spec)``) and, at privacy "exact", ``Port`` (the MV DSO's
mailbox to each LV DSO; ``create(n, "Port", areas=[public ids])`` after ``MV``, in its
simulator). Params of ``LV`` and ``MV``: ``max_rounds``, ``privacy`` ("full" or "exact"),
``request_mw`` (the frames' announced requests; needed at "exact"). Every file an entity
names is relative to the simulator's working folder (the ``cwd`` of a ``cmd`` process, the
folder a ``--remote`` server was started in): a path on one machine means nothing on
another, so no path leaves the process. An LV spec: ``area_file`` (its pandapower JSON
written by the split step), ``bids_file`` (bids CSV with buses), ``key_file`` (its Ed25519
private key, PEM), ``secret_file`` (its private secret, :mod:`flexcore.region.ids`),
``seed``, optional ``injections_file`` (its elements' per-frame injections,
:class:`flexcore.region.dsos.FrameInjections`; absent: static loads), ``fractions``. The MV
spec: ``model_file``, ``key_file``, ``secret_file``, ``seed``, ``injections_file``,
``areas`` (the public ids of the areas in the clearing: its columns), ``model_names``
(their names in its model), ``mv_buses``, ``volume_mw`` (their bid totals), ``load_areas``
(every area load of its model, in the order of its meter's draws), ``fractions``.

Every DSO derives its names from its secret (:class:`flexcore.region.ids.DsoIdentity`):
an LV entity's id is its **public id** (what the TSO knows it by), its package columns are
its **bid pseudonyms**, its row keys are salted with its **private salt**; the area's name
(``lv<trafo>``), its buses and loads stay in the process, and its check goes to the TSO as
numbers only. The MV DSO (entity ``mv``, a public role) salts its rows with its own salt;
its columns are the areas' public ids.

Per frame (mosaik time = frame x ``step_s``) and round k, with the region grid's meter of
the entity's own area (``measured``) and the TSO's answer (``from_tso``)::

    measured(round -1: the frame's base state)  -> apply the frame's injections, set the slack
        to the measured MV-bus voltage (LV) / the areas' loads to the measured transformer
        draws (MV), linearise -> to_tso {round 0, package}
    from_tso(round k) + measured(round k) -> check the own rows (errors against the AC, the
        base-case violation rule) -> to_tso {round k, check, ok, package of round k+1 or null}

**privacy "exact"** (format 2, :mod:`flexcore.region.publish`; "full": format 1, the TSO
gets the DSO's whole linear model). Each DSO publishes only the sides of its rows that
the clearing of the frame's announced request (``request_mw``) needs, found lazily inside
each round: the TSO's clearing ``j`` of round k (``lazy = j``, no set-points yet) comes
first, and the DSOs answer it among themselves and to the TSO::

    from_tso(k, j) to MV: its injections and point -> check its limit sides (adds the most
        violated unpublished one), every area's slack-voltage change sigma_a from its
        private model -> to_lv on the area's Port (each LV DSO gets its own sigma only)
    from_tso(k, j) + from_mv(k, j) at LV a -> check every side at (x, sigma_a) ->
        to_tso {k, j, added, package or null}; to_mv {k, j, link: only published sides
        violated, i.e. the clearing assumed another slack voltage}
    from_lv(k, j) of every area at MV -> publish the links asked for ->
        to_tso {k, j, added, package or null, slack_columns}

The TSO clears again until no DSO adds anything, then dispatches that clearing (round k
as above): the DSOs predict their rows privately (LV: at the sigma the MV DSO told it) and
a refinement starts the next round's sides from those published before
(:meth:`~flexcore.region.publish.LazySides.carry_over`). The ``Port`` model (in the MV
DSO's simulator, one per LV DSO, named by its public id) is the MV DSO's mailbox to that
LV DSO: a mosaik entity sends one value to every entity it is connected to, so one port per
LV DSO keeps each sigma private to its area.

A new frame starts as the param ``policy`` says (:class:`flexcore.region.dsos.FramePolicy`
as a dict; None: its defaults), the study's policy: at "exact" the sides and links the DSO
published at the end of the previous frame are published from the start
(``carry_frames``), ``cut_sides`` sides are added per lazy clearing, and with
``warm_point`` round 0's package also holds a point at the previous frame's dispatched
activation (LV: at the new measured slack voltage plus the previous frame's slack change;
MV: at the new measured draws plus the change the previous dispatch made to them).

The round policy is the single DSO's (param ``refinement``: a
:class:`flexcore.dso.refinement.RefinementPolicy` as a dict, None: its defaults; its
``max_rounds`` is the param ``max_rounds``), the rule of
:func:`flexcore.region.study.run_region`: a DSO publishes with the solver margin
(``solver_margin``); when k < ``max_rounds``, the AC converged and its check is not ok
(``safe``: no row violated; ``ok``: safe and within Table 1), a DSO whose check shows
violated rows shifts them by the observed mismatch (``tighten_unsafe``,
:meth:`LVDso.tighten` at the slack change the clearing assumed / :meth:`MVDso.tighten`),
an active LV DSO adds a point at its activation and the measured slack voltage
(:meth:`LVDso.refine`), and the DSO publishes the new package. The MV DSO refines whenever
k < ``max_rounds`` and the AC converged (at the measured draws): it cannot see the LV
checks, so its last refinement is wasted when the TSO stops. The TSO's last message of a
frame (``final``) names the round it dispatched (``dispatched_round``, None: nothing): the
next frame's warm point is at that round's activation (none without a dispatch). Packages
cross as signed bytes (base64 text of :func:`flexcore.exchange.wire.package_to_bytes`).

``python -m agents.region_dso HOST:PORT`` is the ``cmd`` form; ``python -m
agents.region_dso HOST:PORT --remote`` serves on HOST:PORT until mosaik connects (mosaik's
``connect`` starter), the way a DSO on another machine takes part.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from simulators import FrameSimulator, meta_from_table

ATTRS_IN = (("measured", "the region grid's meter of the own area (its AC values)"),
            ("from_tso", "the TSO's clearing for this DSO"),
            ("from_mv", "LV, exact: the MV DSO's slack-voltage change of this area"))
ATTRS_OUT = (("to_tso", "package (signed bytes, base64) and/or the round's check"),
             ("to_mv", "LV, exact: whether the DSO asks for its link"),
             ("report", "the DSO's round record (check, rounds) for the run's tables"))
_MODEL = {"public": True, "attrs": [a for a, _ in ATTRS_IN + ATTRS_OUT]}
_PARAMS = ["max_rounds", "privacy", "request_mw", "policy", "refinement"]
META = meta_from_table({"LV": _MODEL | {"params": ["dsos", "coupled", *_PARAMS]},
                        "MV": _MODEL | {"params": ["dso", *_PARAMS]},
                        "Port": {"public": True, "params": ["areas"],
                                 "attrs": ["from_lv", "to_lv"]}},
                       sim_type="event-based")
PRIVACY = ("full", "exact")


def _measured_ac(m: dict):
    """The meter payload as a RegionAC (values by bus and by (element, index))."""
    from flexcore.region.study import RegionAC

    if not m["converged"]:
        return RegionAC(False, {}, {}, math.nan)
    return RegionAC(True, dict(zip(m["buses"], m["vm_pu"])),
                    {(e, int(i)): v for (e, i), v in zip(m["branches"], m["loading_percent"])},
                    math.nan)


def _safe_ok(check, ac) -> tuple[bool, bool]:
    """(safe: the AC converged and no row is violated; ok: safe and within Table 1), the
    rule of :func:`flexcore.region.study.run_region`."""
    from flexcore.region.study import within_table1

    safe = bool(ac.converged and check.violations == 0)
    return safe, safe and within_table1(check)


def _public(check) -> dict:
    """A check as it goes to the TSO: numbers only (``worst`` names a bus or branch)."""
    return {k: v for k, v in check.__dict__.items() if k != "worst"}


class _Entity:
    """What every DSO entity shares: its files, key, the frame's base state, the rounds,
    the privacy level and, at ``"exact"``, its shuffle generator."""

    def __init__(self, root: Path, spec: dict, max_rounds: int, privacy: str,
                 request_mw: list[float] | None, policy: dict | None = None,
                 refinement: dict | None = None):
        from flexcore.dso.refinement import RefinementPolicy
        from flexcore.exchange.signing import load_private_key
        from flexcore.region.dsos import FrameInjections, FramePolicy
        from flexcore.region.ids import DsoIdentity
        from flexcore.region.publish import shuffle_rng

        if privacy not in PRIVACY:
            raise ValueError(f"RegionDSO: privacy must be one of {PRIVACY}, got {privacy!r}")
        if privacy == "exact" and request_mw is None:
            raise ValueError("RegionDSO: privacy 'exact' needs the frames' request_mw (the "
                             "rows are published for one request)")
        self.spec, self.max_rounds = spec, int(max_rounds)
        self.policy = FramePolicy.of(policy)
        self.refinement = RefinementPolicy(**{**(refinement or {}),
                                              "max_rounds": self.max_rounds})
        self.exact = privacy == "exact"
        self.request = [float(r) for r in request_mw or []]
        self.key = load_private_key(root / spec["key_file"])
        self.identity = DsoIdentity((root / spec["secret_file"]).read_bytes(),
                                    int(spec.get("seed", 0)))
        self.rng = shuffle_rng(self.identity.shuffle_seed, self.identity.seed)
        self.eid = "mv"
        inj = spec.get("injections_file")
        self.injections = FrameInjections.load(root / inj) if inj else None
        self.fractions = tuple(float(f) for f in spec.get("fractions", (0.0, 0.5, 1.0)))
        self.frame = -1
        self.base = None
        self.pub = None      # exact: the round's LVPublisher / MVPublisher
        self.last_x: np.ndarray | None = None   # the last dispatched activation (own share)
        self.pending: dict[tuple[int, int | None], dict] = {}
        #: this frame's rounds: round -> (own activation, slack change (LV) / draw change
        #: (MV)), for the TSO's final word on which one it dispatched, and the round's
        #: answer (without the package); rows tightened in the frame so far
        self.done: dict[int, tuple] = {}
        self.answered: dict[int, dict] = {}
        self.tightened = 0

    def publish(self, package) -> str:
        from flexcore.exchange.wire import package_to_text

        return package_to_text(package, self.key)

    def violated(self, limits, ac) -> tuple[dict, dict]:
        """The DSO's rows the measured AC state violates (base-case rule), by row key."""
        from flexcore.region.study import violated_rows

        d = self.dso
        return violated_rows(limits, d.package, d.lin.keymap, ac, self.base)

    def dispatched(self, k: int | None) -> None:
        """The TSO dispatched round ``k`` of this frame (None: nothing)."""
        self.last_x = self.done[k][0] if k is not None and k in self.done else None

    def check(self, limits, pred_vm: np.ndarray, pred_ld: np.ndarray, ac):
        """The DSO's check of its package rows: the predictions against the measured AC
        state (``RowCheck()`` when the power flow failed)."""
        from flexcore.region.study import RowCheck, _check_rows

        if not ac.converged:
            return RowCheck()
        d = self.dso
        km = d.lin.keymap
        return _check_rows(limits, [km.vm_pu[r] for r in d.package.vm_rows],
                           [km.loading_percent[r] for r in d.package.loading_rows],
                           np.asarray(pred_vm, float), np.asarray(pred_ld, float),
                           ac, self.base)

    def receive(self, frame: int, attr: str, msg: dict, port: str | None = None
                ) -> dict[str, dict]:
        """Buffer ``msg`` (by round and lazy clearing; a port's message under the port's
        name); returns what to send, by entity id and attribute. A ``to_tso`` message
        carries ``time_s`` (the entity's own time in this frame so far); every one but a
        lazy answer goes to the ``report`` too."""
        t0 = time.perf_counter()
        lazy = None
        if attr == "from_tso" and msg.get("final"):
            return self.final(msg.get("dispatched_round"), t0)
        if attr == "measured" and msg["round"] == -1:
            self.frame, self.base, self.pending, self.done = frame, _measured_ac(msg), {}, {}
            self.answered, self.tightened = {}, 0
            self.time_s = 0.0
            if not self.base.converged:
                out = {self.eid: {"to_tso": {
                    "frame": frame, "round": 0, "package": None,
                    "failed": f"{self.eid}: the base-case AC power flow did not converge"}}}
            else:
                out = {self.eid: {"to_tso": self.start(msg)}}
        else:
            lazy = msg.get("lazy")
            key = (int(msg["round"]), lazy)
            slot = self.pending.setdefault(key, {})
            slot[port or attr] = msg
            out = self.handle(key, slot)
        self.time_s += time.perf_counter() - t0
        mine = out.get(self.eid, {})
        if "to_tso" in mine:
            mine["to_tso"] = mine["to_tso"] | {"time_s": self.time_s}
            if lazy is None:
                mine["report"] = {k: v for k, v in mine["to_tso"].items() if k != "package"} \
                    | self.private_report()
                if "check" in mine["report"]:
                    self.answered[int(mine["report"]["round"])] = mine["report"]
        return out

    def final(self, k, t0: float) -> dict[str, dict]:
        """The TSO's last word on the frame: it dispatched round ``k`` (None: nothing). The
        warm point of the next frame follows it; the report repeats the DSO's answer of that
        round (else of the last) as the frame's (``final``; its ``rows_tightened``: the
        frame's)."""
        k = None if k is None else int(k)
        self.dispatched(k)
        self.time_s += time.perf_counter() - t0
        rep = self.answered.get(k) if k is not None else None
        if rep is None and self.answered:
            rep = self.answered[max(self.answered)]
        if rep is None:
            return {}
        return {self.eid: {"report": rep | {"final": True, "dispatched_round": k,
                                            "rows_tightened": self.tightened,
                                            "time_s": self.time_s}}}

    def handle(self, key: tuple[int, int | None], slot: dict) -> dict[str, dict]:
        """A dispatched clearing (``key = (k, None)``) once its measurement is in: the
        round's check; a lazy clearing: :meth:`lazy` (entity-specific)."""
        k, lazy = key
        if lazy is not None:
            return self.lazy(k, lazy, slot)
        if "from_tso" not in slot or "measured" not in slot:
            return {}
        del self.pending[key]
        return {self.eid: {"to_tso": self.answer(k, slot["from_tso"], slot["measured"])}}

    def private_report(self) -> dict:
        return {}


class _LVEntity(_Entity):
    def __init__(self, root: Path, spec: dict, max_rounds: int, coupled: bool, privacy: str,
                 request_mw: list[float] | None, policy: dict | None = None,
                 refinement: dict | None = None):
        from flexcore.exchange.bids import read_bids
        from flexcore.region.dsos import area_of, read_area

        super().__init__(root, spec, max_rounds, privacy, request_mw, policy, refinement)
        self.net = read_area(root / spec["area_file"])
        self.area = area_of(self.net)   # its name stays here: the TSO knows the public id
        self.eid = self.identity.public_id
        self.bids = self.identity.pseudonymous(read_bids(root / spec["bids_file"],
                                                         require_bus=True))
        self.coupled = bool(coupled)
        self.dso = None
        self.sigma: float | None = None    # exact: the MV DSO's sigma of the dispatch
        self.last_dv: float | None = None  # the slack change of the last dispatched clearing

    def _package(self, previous=None) -> str:
        """The package to publish (signed text): format 1 (with the slack column when
        coupled), or at "exact" the first format-2 package of a new round's sides."""
        from flexcore.region.publish import LVPublisher

        d = self.dso
        linear = d.published(coupled=self.coupled)
        if not self.exact:
            return self.publish(linear)
        self.pub = LVPublisher.start(linear, request_mw=self.request[self.frame],
                                     rng=self.rng, previous=previous,
                                     per_cut=self.policy.cut_sides)
        return self.publish(self.pub.package)

    def start(self, m: dict) -> dict:
        from flexcore.region.dsos import lv_dso
        from flexcore.region.split import LV_LIMITS

        sigma, self.sigma = self.last_dv, None
        if self.injections is not None:
            self.injections.apply(self.net, self.frame)
        eg = self.net.ext_grid.index[0]
        self.net.ext_grid.at[eg, "vm_pu"] = float(m["slack_vm_pu"])
        self.net.ext_grid.at[eg, "va_degree"] = float(m["slack_va_degree"])
        if self.dso is None:
            self.dso = lv_dso(self.area, self.bids, limits=LV_LIMITS,
                              fractions=self.fractions, salt=self.identity.salt)
            self.dso.solver_margin = self.refinement.solver_margin
        else:  # the same model, new loads and slack voltage: an update, no rebuild
            self.dso.relinearize(self.fractions, net=self.net,
                                 slack_vm_pu=float(m["slack_vm_pu"]))
        self.policy.warm_lv(self.dso, self.last_x, sigma)
        carried = self.pub if self.policy.carry_frames else None
        return {"frame": self.frame, "round": 0, "package": self._package(carried)}

    def lazy(self, k: int, j: int, slot: dict) -> dict[str, dict]:
        """Exact: check every side at the lazy clearing ``j`` and the MV DSO's sigma."""
        if "from_tso" not in slot or (self.coupled and "from_mv" not in slot):
            return {}
        del self.pending[k, j]
        c = slot["from_tso"]
        sigma = slot["from_mv"]["sigma"] if self.coupled else None
        state = self.pub.check(int(c["point"]), np.asarray(c["activation_mw"], float), sigma)
        head = {"frame": self.frame, "round": k, "lazy": j}
        out = {"to_tso": head | {"added": state == "cut", "package": self.publish(
            self.pub.package) if state == "cut" else None}}
        if self.coupled:
            out["to_mv"] = head | {"link": state == "published"}
        return {self.eid: out}

    def answer(self, k: int, clearing: dict, m: dict) -> dict:
        from flexcore.region.split import LV_LIMITS
        d = self.dso
        ac = _measured_ac(m)
        x = np.asarray(clearing["activation_mw"], float)
        if self.exact:   # format 2 carries no base values: the DSO predicts its own rows
            pred = self.pub.predict(d, int(clearing["point"]), x)
            self.sigma = dv = self.pub.sigma
        else:
            pred = clearing["predicted_vm_pu"], clearing["predicted_loading_percent"]
            dv = clearing.get("slack_dv_pu")
        self.done[k] = (x, dv)
        check = self.check(LV_LIMITS, *pred, ac)
        safe, ok = _safe_ok(check, ac)
        package = None
        if k < self.max_rounds and ac.converged and not ok:
            active = bool(np.any(np.abs(x) > 1e-9))
            vm, ld = self.violated(LV_LIMITS, ac)
            shifted = d.next_round(int(clearing["point"]), x, dv if self.coupled else None,
                                   ac_vm_pu=vm, ac_loading_percent=ld, limits=LV_LIMITS,
                                   tighten_unsafe=self.refinement.tighten_unsafe,
                                   refine=active, slack_vm_pu=ac.vm_pu[d.area.mv_bus])
            self.tightened += shifted
            if active or shifted:
                package = self._package(previous=self.pub)
        return {"frame": self.frame, "round": k, "converged": ac.converged, "safe": safe,
                "ok": ok, "check": _public(check), "rounds": d.rounds,
                "rows_tightened": self.tightened, "package": package}

    def dispatched(self, k: int | None) -> None:
        super().dispatched(k)
        self.last_dv = self.done[k][1] if self.last_x is not None else None

    def private_report(self) -> dict:
        """The slack change the MV DSO told this DSO for the dispatched clearing (exact;
        the TSO does not see it)."""
        return {} if self.sigma is None else {"slack_dv_pu": self.sigma}


class _MVEntity(_Entity):
    def __init__(self, root: Path, spec: dict, max_rounds: int, privacy: str,
                 request_mw: list[float] | None, policy: dict | None = None,
                 refinement: dict | None = None):
        from flexcore.region.dsos import read_area

        super().__init__(root, spec, max_rounds, privacy, request_mw, policy, refinement)
        self.net = read_area(root / spec["model_file"])
        self.areas = [str(a) for a in spec["areas"]]
        self.model_names = [str(a) for a in spec.get("model_names", self.areas)]
        self.load_areas = [str(a) for a in spec.get("load_areas", self.model_names)]
        self._col = [self.load_areas.index(a) for a in self.model_names]
        self.dso = None
        self._area_pos: np.ndarray | None = None   # start(): the area loads' table rows
        self.base_draws: tuple[np.ndarray, np.ndarray] | None = None   # measured, per column
        self.draw_change: tuple[np.ndarray, np.ndarray] | None = None  # by the dispatch

    def _package(self, previous=None) -> dict:
        """The package message part: format 1 with the map area -> voltage row, or at
        "exact" a new round's first format-2 package with the slack columns of its links
        (the TSO gets no row of the MV model by name)."""
        from flexcore.region.publish import MVPublisher

        d = self.dso
        if not self.exact:
            return {"package": self.publish(d.published()), "slack_rows": dict(d.slack_row)}
        self.pub = MVPublisher.start(d.published(), [d.slack_row[a] for a in self.areas],
                                     request_mw=self.request[self.frame], rng=self.rng,
                                     previous=previous, per_cut=self.policy.cut_sides)
        return {"package": self.publish(self.pub.package),
                "slack_columns": self.pub.slack_columns(self.areas)}

    def start(self, m: dict) -> dict:
        from flexcore.region.dsos import mv_dso
        from flexcore.region.split import AREA_LOAD_PREFIX, MV_LIMITS

        if self.injections is not None:
            self.injections.apply(self.net, self.frame)
        load = self.net.load
        if self._area_pos is None:   # the area loads' rows, in the meter's order
            names = load.name.astype(str).to_numpy()
            self._area_pos = np.array([np.flatnonzero(names == AREA_LOAD_PREFIX + a)[0]
                                       for a in self.load_areas], dtype=np.int64)
        # every LV area of the model (also those without a DSO in the clearing) draws
        # what the meters measured
        for col, draw in (("p_mw", m["draw_p_mw"]), ("q_mvar", m["draw_q_mvar"])):
            values = load[col].to_numpy(np.float64).copy()
            values[self._area_pos] = np.asarray(draw, np.float64)
            load[col] = values
        if self.dso is None:
            self.dso = mv_dso(self.net, self.areas, [int(b) for b in self.spec["mv_buses"]],
                              [float(v) for v in self.spec["volume_mw"]], limits=MV_LIMITS,
                              fractions=self.fractions, salt=self.identity.salt,
                              model_names=self.model_names)
            self.dso.solver_margin = self.refinement.solver_margin
        else:
            self.dso.relinearize(self.fractions, net=self.net)
        self.policy.warm_mv(self.dso, self.last_x, self.draw_change)
        self.base_draws = (np.asarray(m["draw_p_mw"], float)[self._col],
                           np.asarray(m["draw_q_mvar"], float)[self._col])
        carried = self.pub if self.policy.carry_frames else None
        return {"frame": self.frame, "round": 0} | self._package(carried)

    def lazy(self, k: int, j: int, slot: dict) -> dict[str, dict]:
        """Exact, in two steps: the TSO's clearing ``j`` -> check, each area's sigma to its
        port; every area's answer -> publish the links asked for -> to the TSO."""
        out: dict[str, dict] = {}
        head = {"frame": self.frame, "round": k, "lazy": j}
        if "from_tso" in slot and "told" not in slot:
            c = slot["from_tso"]
            sigma = self.pub.check(int(c["point"]), np.asarray(c["injection_mw"], float))
            out = {a: {"to_lv": head | {"sigma": float(s)}} for a, s in zip(self.areas, sigma)}
            slot["told"] = True
        if "told" in slot and all(a in slot for a in self.areas):
            del self.pending[k, j]
            for idx, a in enumerate(self.areas):
                if slot[a]["link"]:
                    self.pub.link(idx)
            added = self.pub.republish()
            out[self.eid] = {"to_tso": head | {
                "added": added, "package": self.publish(self.pub.package) if added else None,
                "slack_columns": self.pub.slack_columns(self.areas)}}
        return out

    def answer(self, k: int, clearing: dict, m: dict) -> dict:
        from flexcore.region.split import MV_LIMITS
        d = self.dso
        ac = _measured_ac(m)
        y = np.asarray(clearing["injection_mw"], float)
        change = None
        if ac.converged and self.base_draws is not None:
            change = (np.asarray(m["draw_p_mw"], float)[self._col] - self.base_draws[0],
                      np.asarray(m["draw_q_mvar"], float)[self._col] - self.base_draws[1])
        self.done[k] = (y, change)
        if self.exact:
            pred = d.package.predict(int(clearing["point"]), y)
        else:
            pred = clearing["predicted_vm_pu"], clearing["predicted_loading_percent"]
        check = self.check(MV_LIMITS, *pred, ac)
        safe, ok = _safe_ok(check, ac)
        shifted = 0
        if k < self.max_rounds and ac.converged and not safe and \
                self.refinement.tighten_unsafe:
            vm, ld = self.violated(MV_LIMITS, ac)
            shifted = d.tighten(int(clearing["point"]), y, ac_vm_pu=vm, ac_loading_percent=ld,
                                limits=MV_LIMITS).n
            self.tightened += shifted
        out = {"frame": self.frame, "round": k, "converged": ac.converged, "safe": safe,
               "ok": ok, "check": _public(check), "rounds": k,
               "rows_tightened": self.tightened, "package": None}
        if k < self.max_rounds and ac.converged:
            d.refine(y, draw_p_mw=np.asarray(m["draw_p_mw"], float)[self._col],
                     draw_q_mvar=np.asarray(m["draw_q_mvar"], float)[self._col])
            out |= self._package(previous=self.pub)
        return out

    def dispatched(self, k: int | None) -> None:
        super().dispatched(k)
        self.draw_change = self.done[k][1] if self.last_x is not None else None


class RegionDSO(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.entities: dict[str, _Entity] = {}
        self.ports: dict[str, _MVEntity] = {}     # port id (an LV DSO's public id) -> MV
        self.step_s = 900
        self._eout: dict[str, dict] = {}

    def init(self, sid, time_resolution=1.0, step_s: int = 900, workdir: str | None = None,
             **sim_params):
        """``workdir``: only for in-process use (starter "python"); a process works in its
        cwd."""
        self.step_s = int(step_s)
        self.root = Path(workdir) if workdir else Path(os.getcwd())
        return self.meta

    def create(self, num, model, *, max_rounds: int = 3, coupled: bool = True,
               privacy: str = "full", request_mw: list[float] | None = None,
               dsos: list[dict] | None = None, dso: dict | None = None,
               areas: list[str] | None = None, policy: dict | None = None,
               refinement: dict | None = None):
        if model == "Port":
            mv = self.entities.get("mv")
            if not isinstance(mv, _MVEntity) or list(areas or []) != mv.areas or \
                    num != len(mv.areas):
                raise ValueError("RegionDSO.Port: one port per area of the MV DSO created "
                                 "before, in its order")
            self.ports = {a: mv for a in mv.areas}
            return [{"eid": a, "type": model} for a in mv.areas]
        specs = list(dsos or []) if model == "LV" else [dso]
        if len(specs) != num or any(s is None for s in specs):
            raise ValueError(f"RegionDSO.{model}: {num} entities need {num} DSO spec(s)")
        out = []
        for s in specs:
            ent = (_LVEntity(self.root, s, max_rounds, coupled, privacy, request_mw, policy,
                             refinement)
                   if model == "LV" else _MVEntity(self.root, s, max_rounds, privacy,
                                                   request_mw, policy, refinement))
            if ent.eid in self.entities:
                raise ValueError(f"RegionDSO: DSO {ent.eid!r} created twice")
            self.entities[ent.eid] = ent
            out.append({"eid": ent.eid, "type": model})   # LV: its public id
        return out

    def step(self, time, inputs, max_advance):
        frame = int(time) // self.step_s
        self._eout = {}
        for eid, attrs in inputs.items():
            if eid in self.ports:    # an LV DSO's answer to the MV DSO
                for msg in attrs.get("from_lv", {}).values():
                    self._emit(self.ports[eid].receive(frame, "from_lv", msg, port=eid))
                continue
            ent = self.entities[eid]
            for attr in ("measured", "from_mv", "from_tso"):
                for msg in attrs.get(attr, {}).values():
                    self._emit(ent.receive(frame, attr, msg))
        return None

    def _emit(self, out: dict[str, dict]) -> None:
        for eid, attrs in out.items():
            self._eout.setdefault(eid, {}).update(attrs)

    def get_data(self, outputs):
        return {eid: {a: self._eout[eid][a] for a in attrs if a in self._eout.get(eid, {})}
                for eid, attrs in outputs.items()}


def main() -> None:
    from simulators import start_simulation

    start_simulation(RegionDSO())


if __name__ == "__main__":
    main()
