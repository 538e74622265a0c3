"""RegionDSO: a mosaik simulator holding many DSOs of a region, each with its private model.

Models: ``LV`` (one entity per LV DSO; ``create(n, "LV", dsos=[spec, ...])``) and ``MV``
(the MV DSO; ``create(1, "MV", dso=spec)``). Every file an entity names is relative to the
simulator's working folder (the ``cwd`` of a ``cmd`` process, the folder a ``--remote``
server was started in): a path on one machine means nothing on another, so no path leaves
the process. An LV spec: ``area_file`` (its pandapower JSON written by the split
step), ``bids_file`` (bids CSV with buses), ``key_file`` (its Ed25519 private key, PEM),
``secret_file`` (its private secret, :mod:`flexcore.region.ids`), ``seed``, optional
``injections_file`` (its elements' per-frame injections,
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

An LV DSO refines (:meth:`LVDso.refine`, at the cleared activation and the measured slack
voltage) when k < ``max_rounds``, the AC converged, it is active and its check failed, the
rule of :func:`flexcore.region.study.run_region`. The MV DSO refines whenever k <
``max_rounds`` and the AC converged (at the measured draws): it cannot see the LV checks, so
its last refinement is wasted when the TSO stops. Packages cross as signed bytes
(base64 text of :func:`flexcore.exchange.wire.package_to_bytes`).

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
            ("from_tso", "the TSO's clearing for this DSO"))
ATTRS_OUT = (("to_tso", "package (signed bytes, base64) and/or the round's check"),
             ("report", "the DSO's round record (check, rounds)"))
_MODEL = {"public": True, "attrs": [a for a, _ in ATTRS_IN + ATTRS_OUT]}
META = meta_from_table({"LV": _MODEL | {"params": ["dsos", "max_rounds", "coupled"]},
                        "MV": _MODEL | {"params": ["dso", "max_rounds"]}},
                       sim_type="event-based")


def _measured_ac(m: dict):
    """The meter payload as a RegionAC (values by bus and by (element, index))."""
    from flexcore.region.study import RegionAC

    if not m["converged"]:
        return RegionAC(False, {}, {}, math.nan)
    return RegionAC(True, dict(zip(m["buses"], m["vm_pu"])),
                    {(e, int(i)): v for (e, i), v in zip(m["branches"], m["loading_percent"])},
                    math.nan)


def _ok(check) -> bool:
    from flexcore.region.study import TABLE1_LOADING_PERCENT, TABLE1_VM_PU

    return (check.violations == 0 and check.max_vm_err_pu <= TABLE1_VM_PU
            and check.max_loading_err_percent <= TABLE1_LOADING_PERCENT)


def _public(check) -> dict:
    """A check as it goes to the TSO: numbers only (``worst`` names a bus or branch)."""
    return {k: v for k, v in check.__dict__.items() if k != "worst"}


class _Entity:
    """What every DSO entity shares: its files, key, the frame's base state, the rounds."""

    def __init__(self, root: Path, spec: dict, max_rounds: int):
        from flexcore.exchange.signing import load_private_key
        from flexcore.region.dsos import FrameInjections
        from flexcore.region.ids import DsoIdentity

        self.spec, self.max_rounds = spec, int(max_rounds)
        self.key = load_private_key(root / spec["key_file"])
        self.identity = DsoIdentity((root / spec["secret_file"]).read_bytes(),
                                    int(spec.get("seed", 0)))
        self.eid = "mv"
        inj = spec.get("injections_file")
        self.injections = FrameInjections.load(root / inj) if inj else None
        self.fractions = tuple(float(f) for f in spec.get("fractions", (0.0, 0.5, 1.0)))
        self.frame = -1
        self.base = None
        self.pending: dict[int, dict] = {}

    def publish(self, package) -> str:
        from flexcore.exchange.wire import package_to_text

        return package_to_text(package, self.key)

    def check(self, limits, clearing: dict, ac):
        """The DSO's check of its package rows: the clearing's predictions against the
        measured AC state (``RowCheck()`` when the power flow failed)."""
        from flexcore.region.study import RowCheck, _check_rows

        if not ac.converged:
            return RowCheck()
        d = self.dso
        km = d.lin.keymap
        return _check_rows(limits, [km.vm_pu[r] for r in d.package.vm_rows],
                           [km.loading_percent[r] for r in d.package.loading_rows],
                           np.asarray(clearing["predicted_vm_pu"], float),
                           np.asarray(clearing["predicted_loading_percent"], float),
                           ac, self.base)

    def receive(self, frame: int, attr: str, msg: dict) -> dict | None:
        """Buffer ``msg``; returns the to_tso message when the entity has something to say
        (with ``time_s``: the entity's own time in this frame so far)."""
        t0 = time.perf_counter()
        if attr == "measured" and msg["round"] == -1:
            self.frame, self.base, self.pending = frame, _measured_ac(msg), {}
            self.time_s = 0.0
            if not self.base.converged:
                return {"frame": frame, "round": 0, "package": None,
                        "failed": f"{self.eid}: the base-case AC power flow did not converge"}
            reply = self.start(msg)
        else:
            slot = self.pending.setdefault(int(msg["round"]), {})
            slot[attr] = msg
            if len(slot) < 2:
                return None
            k = int(msg["round"])
            del self.pending[k]
            reply = self.answer(k, slot["from_tso"], slot["measured"])
        self.time_s += time.perf_counter() - t0
        return reply | {"time_s": self.time_s}


class _LVEntity(_Entity):
    def __init__(self, root: Path, spec: dict, max_rounds: int, coupled: bool):
        from flexcore.exchange.bids import read_bids
        from flexcore.region.dsos import area_of, read_area

        super().__init__(root, spec, max_rounds)
        self.net = read_area(root / spec["area_file"])
        self.area = area_of(self.net)   # its name stays here: the TSO knows the public id
        self.eid = self.identity.public_id
        self.bids = self.identity.pseudonymous(read_bids(root / spec["bids_file"],
                                                         require_bus=True))
        self.coupled = bool(coupled)
        self.dso = None

    def start(self, m: dict) -> dict:
        from flexcore.region.dsos import lv_dso
        from flexcore.region.split import LV_LIMITS

        if self.injections is not None:
            self.injections.apply(self.net, self.frame)
        eg = self.net.ext_grid.index[0]
        self.net.ext_grid.at[eg, "vm_pu"] = float(m["slack_vm_pu"])
        self.net.ext_grid.at[eg, "va_degree"] = float(m["slack_va_degree"])
        if self.dso is None:
            self.dso = lv_dso(self.area, self.bids, limits=LV_LIMITS,
                              fractions=self.fractions, salt=self.identity.salt)
        else:  # the same model, new loads and slack voltage: an update, no rebuild
            self.dso.relinearize(self.fractions, net=self.net,
                                 slack_vm_pu=float(m["slack_vm_pu"]))
        pkg = self.dso.published() if self.coupled else self.dso.package
        return {"frame": self.frame, "round": 0, "package": self.publish(pkg)}

    def answer(self, k: int, clearing: dict, m: dict) -> dict:
        from flexcore.region.split import LV_LIMITS
        d = self.dso
        ac = _measured_ac(m)
        x = np.asarray(clearing["activation_mw"], float)
        check = self.check(LV_LIMITS, clearing, ac)
        ok = _ok(check)
        package = None
        if k < self.max_rounds and ac.converged and not ok and np.any(np.abs(x) > 1e-9):
            d.refine(x, ac.vm_pu[d.area.mv_bus])
            package = self.publish(d.published() if self.coupled else d.package)
        return {"frame": self.frame, "round": k, "converged": ac.converged, "ok": ok,
                "check": _public(check), "rounds": d.rounds, "package": package}


class _MVEntity(_Entity):
    def __init__(self, root: Path, spec: dict, max_rounds: int):
        from flexcore.region.dsos import read_area

        super().__init__(root, spec, max_rounds)
        self.net = read_area(root / spec["model_file"])
        self.areas = [str(a) for a in spec["areas"]]
        self.model_names = [str(a) for a in spec.get("model_names", self.areas)]
        self.load_areas = [str(a) for a in spec.get("load_areas", self.model_names)]
        self._col = [self.load_areas.index(a) for a in self.model_names]
        self.dso = None

    def start(self, m: dict) -> dict:
        from flexcore.region.dsos import mv_dso
        from flexcore.region.split import AREA_LOAD_PREFIX, MV_LIMITS

        if self.injections is not None:
            self.injections.apply(self.net, self.frame)
        names = self.net.load.name.astype(str)
        # every LV area of the model (also those without a DSO in the clearing) draws
        # what the meters measured
        for a, p, q in zip(self.load_areas, m["draw_p_mw"], m["draw_q_mvar"]):
            i = self.net.load.index[names == AREA_LOAD_PREFIX + a][0]
            self.net.load.at[i, "p_mw"], self.net.load.at[i, "q_mvar"] = float(p), float(q)
        if self.dso is None:
            self.dso = mv_dso(self.net, self.areas, [int(b) for b in self.spec["mv_buses"]],
                              [float(v) for v in self.spec["volume_mw"]], limits=MV_LIMITS,
                              fractions=self.fractions, salt=self.identity.salt,
                              model_names=self.model_names)
        else:
            self.dso.relinearize(self.fractions, net=self.net)
        return {"frame": self.frame, "round": 0, "package": self.publish(self.dso.package),
                "slack_rows": dict(self.dso.slack_row)}

    def answer(self, k: int, clearing: dict, m: dict) -> dict:
        from flexcore.region.split import MV_LIMITS
        d = self.dso
        ac = _measured_ac(m)
        check = self.check(MV_LIMITS, clearing, ac)
        package = None
        if k < self.max_rounds and ac.converged:
            d.refine(np.asarray(clearing["injection_mw"], float),
                     draw_p_mw=np.asarray(m["draw_p_mw"], float)[self._col],
                     draw_q_mvar=np.asarray(m["draw_q_mvar"], float)[self._col])
            package = self.publish(d.package)
        return {"frame": self.frame, "round": k, "converged": ac.converged, "ok": _ok(check),
                "check": _public(check), "rounds": k, "package": package}


class RegionDSO(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.entities: dict[str, _Entity] = {}
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
               dsos: list[dict] | None = None, dso: dict | None = None):
        specs = list(dsos or []) if model == "LV" else [dso]
        if len(specs) != num or any(s is None for s in specs):
            raise ValueError(f"RegionDSO.{model}: {num} entities need {num} DSO spec(s)")
        out = []
        for s in specs:
            ent = (_LVEntity(self.root, s, max_rounds, coupled) if model == "LV"
                   else _MVEntity(self.root, s, max_rounds))
            if ent.eid in self.entities:
                raise ValueError(f"RegionDSO: DSO {ent.eid!r} created twice")
            self.entities[ent.eid] = ent
            out.append({"eid": ent.eid, "type": model})   # LV: its public id
        return out

    def step(self, time, inputs, max_advance):
        frame = int(time) // self.step_s
        self._eout = {}
        for eid, attrs in inputs.items():
            ent = self.entities[eid]
            for attr in ("measured", "from_tso"):
                for msg in attrs.get(attr, {}).values():
                    reply = ent.receive(frame, attr, msg)
                    if reply is not None:
                        self._eout[eid] = {"to_tso": reply, "report": {
                            k: v for k, v in reply.items() if k != "package"}}
        return None

    def get_data(self, outputs):
        return {eid: {a: self._eout[eid][a] for a in attrs if a in self._eout.get(eid, {})}
                for eid, attrs in outputs.items()}


def main() -> None:
    from simulators import start_simulation

    start_simulation(RegionDSO())


if __name__ == "__main__":
    main()
