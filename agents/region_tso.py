"""RegionTSO: one clearing over every DSO package of a region, per frame and round.

Privacy boundary: imports no pandapower and nothing from flexcore.grid / flexcore.dso /
flexcore.region (import-linter contract ``region-tso-no-grid``). It sees signed package
bytes, bids without buses, the MV DSO's map area -> voltage row, and each DSO's check
summary (numbers only).

Models: ``TSO`` (one: ``request_mw`` per frame, ``max_rounds``, ``time_limit_s``,
``mip_rel_gap``; outputs ``setpoint[MW]`` to the region grid and the frame's ``clearing``
record) and ``Desk`` (one per DSO: ``create(n, "Desk", dsos=[{"name", "public_key" (PEM
text), "bids": {"ids", "volume_mw", "price_eur_per_mwh"} or absent for the MV DSO}])``;
``from_dso`` in, ``to_dso`` out). A desk's name is the DSO's public id (``mv`` for the MV
DSO), its bid ids the DSO's pseudonyms (:mod:`flexcore.region.ids`): the TSO never learns an
area's, bus's or load's name. Sim param ``log_file``: every message the TSO receives and
sends, one JSON line each (what the TSO sees, for the privacy tests and audits).

Round loop (a same-time loop of mosaik tiers, weak connections TSO -> DSOs and TSO ->
grid): when every desk holds a package of round 0, every package is read with
:func:`flexcore.exchange.wire.package_from_text` and **that DSO's public key as the only
trusted one** (a package signed by another key is refused: the frame fails with the
SignatureError named in its record), then :func:`flexcore.market.multi.clear_region`.
Activations go to the grid (``setpoint[MW]``) and each DSO's share to its desk. When every
desk holds the DSO's check of round k, the TSO stops if every check is ok (AC-safe and
within the Table 1 RMSE on the DSO's relevant rows), if k = ``max_rounds`` or if the AC did
not converge; otherwise it clears again with the DSOs' new packages (round k+1: refined,
and with the rows AC violated tightened). Then the safety rule
(:func:`flexcore.exchange.dispatch.choose_dispatch`, param ``refinement``: the
``keep_cheapest_safe`` and ``dispatch_unsafe`` of the DSOs' refinement policy, as a dict;
None: that policy's defaults) names the round dispatched: the last if every DSO's check
of it is safe, else the cheapest safe earlier round, else none (``unsafe``). When that is
not the round the grid last ran, the TSO sends the grid that round's set-points (none:
zero) with ``final`` (``setpoint[MW]``), so the grid ends the frame at the dispatch; every
desk gets ``{"final": true, "dispatched_round"}``. The frame's record (``clearing``):
``status`` (the :class:`~flexcore.exchange.enums.FrameVerdict`), ``dispatched``,
``dispatched_round``, ``round`` (the dispatched round, else the last), ``rounds_run``,
``rows_tightened`` (all DSOs, all rounds); cost and areas of the dispatched clearing.

``privacy = "exact"`` (the TOML's ``[region] privacy``): every package must be format 2
(a format-1 package is refused: the TSO never holds a DSO's linear model), and the MV DSO
sends the slack columns of the links it published instead of its voltage rows. Before a
round's clearing is dispatched, it goes to the DSOs as lazy clearing ``j`` (``lazy = j``,
no set-points): when every desk has answered it (``added``: a DSO published more), the
TSO clears again (j + 1) or, when none added anything (or after ``max_cuts`` clearings),
dispatches the last one; the DSOs predict their own rows (``agents.region_dso``).
"""
from __future__ import annotations

import math
import time as _time

import numpy as np

from simulators import FrameSimulator, meta_from_table

MV = "mv"
META = meta_from_table({
    "TSO": {"public": True,
            "params": ["request_mw", "max_rounds", "time_limit_s", "mip_rel_gap",
                       "privacy", "max_cuts", "refinement"],
            "attrs": ["setpoint[MW]", "clearing"]},
    "Desk": {"public": True, "params": ["dsos"], "attrs": ["from_dso", "to_dso"]},
}, sim_type="event-based")


class RegionTSO(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.request: list[float] | None = None
        self.desks: dict[str, dict] = {}
        self._eout: dict[str, dict] = {}
        self.warm_full: tuple[str, ...] = ()   # the last clearing's full areas (its start)
        self.warm_basis = None    # the last clearing's LP basis (clear_region(warm=))

    def init(self, sid, time_resolution=1.0, step_s: int = 900, log_file: str | None = None,
             log_desks: list[str] | None = None, **sim_params):
        self.step_s = int(step_s)
        self.log_file = log_file
        self.log_desks = None if log_desks is None else set(log_desks)
        return self.meta

    def _log(self, kind: str, messages: dict) -> None:
        if self.log_desks is not None:
            messages = {k: v for k, v in messages.items() if k in self.log_desks}
        if self.log_file and messages:
            import json

            with open(self.log_file, "a") as fh:
                fh.write(json.dumps({"kind": kind, "messages": messages}) + "\n")

    def create(self, num, model, **params):
        from flexcore.exchange.bids import BidTable
        from flexcore.exchange.wire import public_key_from_pem

        if model == "TSO":
            if num != 1 or self.request is not None:
                raise ValueError("RegionTSO holds exactly one TSO entity")
            self.request = [float(x) for x in params["request_mw"]]
            self.max_rounds = int(params.get("max_rounds", 3))
            self.time_limit_s = params.get("time_limit_s")
            self.gap = float(params.get("mip_rel_gap", 1e-6))
            self.privacy = str(params.get("privacy", "full"))
            if self.privacy not in ("full", "exact"):
                raise ValueError(f"RegionTSO: privacy must be 'full' or 'exact', got "
                                 f"{self.privacy!r}")
            self.max_cuts = int(params.get("max_cuts", 200))
            ref = dict(params.get("refinement") or {})
            # the defaults of flexcore.dso.refinement.RefinementPolicy (which this side may
            # not import; tests/test_region_safety.py checks they agree)
            self.keep_cheapest_safe = bool(ref.get("keep_cheapest_safe", True))
            self.dispatch_unsafe = bool(ref.get("dispatch_unsafe", False))
            return [{"eid": "TSO", "type": model}]
        specs = list(params["dsos"])
        if len(specs) != num:
            raise ValueError(f"RegionTSO.Desk: {num} desks need {num} DSO specs")
        out = []
        for s in specs:
            name = str(s["name"])
            b = s.get("bids")
            self.desks[name] = {
                "key": public_key_from_pem(s["public_key"], source=f"public key of {name}"),
                "bids": None if b is None else BidTable(
                    ids=tuple(b["ids"]), volume_mw=np.asarray(b["volume_mw"], float),
                    price_eur_per_mwh=np.asarray(b["price_eur_per_mwh"], float))}
            out.append({"eid": name, "type": model})
        return out

    # ------------------------------------------------------------------ frame state
    def _new_frame(self, frame: int) -> None:
        self.frame, self.round, self.done = frame, 0, False
        self.packages: dict = {}
        self.reports: dict[str, dict] = {}
        self.slack_rows: dict[str, str] = {}       # full: area -> MV voltage row
        self.slack_columns: dict[str, str] = {}    # exact: area -> MV link column
        self.answers: dict[str, dict] = {}         # exact: the DSOs' lazy answers
        self.lazy = 0                              # exact: lazy clearings this round
        self.clearings = 0
        self.verified = 0
        self.t_verify = self.t_clear = 0.0
        self.last = None
        self.outcomes: list = []     # per round: RoundOutcome (flexcore.exchange.dispatch)
        self.cleared: dict = {}      # round -> its dispatched (checked) clearing
        self.grid_round: int | None = None   # the round whose set-points the grid ran last
        self.tightened: dict[str, int] = {}   # per DSO: rows tightened in the frame so far

    def step(self, time, inputs, max_advance):
        frame = int(time) // self.step_s
        if getattr(self, "frame", None) != frame:
            self._new_frame(frame)
        self._eout = {}
        self._log("received", inputs)
        for eid, attrs in inputs.items():
            for msg in attrs.get("from_dso", {}).values():
                self._receive(eid, msg)
        if self.done:
            return None
        if self.round == 0 and not self.reports and set(self.packages) == set(self.desks) \
                and self.last is None:
            self._clear()
        elif self.answers and set(self.answers) == set(self.desks):
            self._lazy_answered()
        elif self.last is not None and set(self.reports) == set(self.desks):
            self._decide()
        return None

    def _receive(self, name: str, msg: dict) -> None:
        from flexcore.exchange.points import PackageError
        from flexcore.exchange.signing import SignatureError
        from flexcore.exchange.wire import package_from_text

        if int(msg["frame"]) != self.frame:
            raise ValueError(f"DSO {name}: message of frame {msg['frame']} in frame "
                             f"{self.frame}")
        if "failed" in msg:
            self._finish("base_not_converged", str(msg["failed"]))
            return
        if msg.get("package") is not None:
            t0 = _time.perf_counter()
            try:
                self.packages[name] = package_from_text(
                    msg["package"], trusted=[self.desks[name]["key"]],
                    allow_full=self.privacy == "full",
                    source=f"package of {name} (frame {self.frame}, round {msg['round']})")
            except (PackageError, SignatureError) as exc:
                self._finish("refused", str(exc))
                return
            finally:
                self.t_verify += _time.perf_counter() - t0
            self.verified += 1
        if "slack_rows" in msg:
            self.slack_rows = dict(msg["slack_rows"])
        if "slack_columns" in msg:
            self.slack_columns = dict(msg["slack_columns"])
        if msg.get("lazy") is not None:
            self.answers[name] = msg
        elif "check" in msg:
            self.reports[name] = msg

    def _clear(self) -> None:
        """One clearing over the packages held; full: dispatched at once; exact: first
        to the DSOs as lazy clearing ``self.lazy``."""
        from flexcore.market.multi import AreaPackage, clear_region

        coupled = MV in self.desks
        self.areas = [AreaPackage(n, self.packages[n], d["bids"],
                                  mv_column=n if coupled else None,
                                  mv_slack_row=self.slack_rows.get(n) if coupled else None,
                                  mv_slack_column=self.slack_columns.get(n))
                      for n, d in self.desks.items() if n != MV]
        t0 = _time.perf_counter()
        r = clear_region(self.areas, self.request[self.frame], mv=self.packages.get(MV),
                         time_limit_s=self.time_limit_s, mip_rel_gap=self.gap,
                         warm_full=self.warm_full, warm=self.warm_basis)
        self.warm_full = r.full_names or self.warm_full
        self.warm_basis = r.lp_basis or self.warm_basis
        self.t_clear += _time.perf_counter() - t0
        self.clearings += 1
        self.last, self.reports, self.answers = r, {}, {}
        if not r.ok:
            from flexcore.exchange.dispatch import RoundOutcome

            self.outcomes.append(RoundOutcome(self.round, r.status, False))
            self._end(r.message)
            return
        if self.privacy == "exact":
            self._eout = self._to_dsos(r, lazy=self.lazy)
        else:
            self._dispatch()

    def _to_dsos(self, r, *, lazy: int | None = None) -> dict[str, dict]:
        """Each DSO's share of clearing ``r`` (with the TSO's predictions at format 1)."""
        head = {"frame": self.frame, "round": self.round} | (
            {"lazy": lazy} if lazy is not None else {})
        full = self.privacy == "full"
        out: dict[str, dict] = {}
        for a in self.areas:
            msg = head | {"activation_mw": r.activation_mw[a.name].tolist(),
                          "point": r.points.get(a.name)}
            if full:
                msg |= {"slack_dv_pu": r.slack_dv_pu.get(a.name, 0.0),
                        "predicted_vm_pu": r.predicted_vm_pu[a.name].tolist(),
                        "predicted_loading_percent":
                            r.predicted_loading_percent[a.name].tolist()}
            out[a.name] = {"to_dso": msg}
        if MV in self.desks:
            msg = head | {"injection_mw": [float(r.activation_mw[a.name].sum())
                                           for a in self.areas], "point": r.mv_point}
            if full:
                msg |= {"predicted_vm_pu": np.asarray(r.mv_predicted_vm_pu).tolist(),
                        "predicted_loading_percent": np.asarray(
                            r.mv_predicted_loading_percent).tolist()}
            out[MV] = {"to_dso": msg}
        return out

    def _lazy_answered(self) -> None:
        """Exact: every DSO answered lazy clearing ``self.lazy``; clear again when one of
        them published more, else dispatch it."""
        added = any(a["added"] for a in self.answers.values())
        self.answers = {}
        self.lazy += 1
        if added and self.lazy < self.max_cuts:
            self._clear()
        else:
            self._dispatch()

    def _dispatch(self) -> None:
        """The last clearing to the grid (set-points) and to the DSOs (for their checks)."""
        r = self.last
        self.cleared[self.round] = r
        self.grid_round = self.round
        self._eout = self._to_dsos(r) | {"TSO": {"setpoint[MW]": self._setpoints(r, self.round)}}

    def _setpoints(self, r, k: int, *, final: bool = False) -> dict:
        """The grid's message: clearing ``r``'s set-points (None: zero) of round ``k`` (-1:
        none); ``final``: the frame's dispatch."""
        setpoints: dict[str, float] = {}
        if r is not None:
            for a in self.areas:
                setpoints.update({b: float(v) for b, v in
                                  zip(a.bids.ids, r.activation_mw[a.name]) if v != 0.0})
        return {"frame": self.frame, "round": k, "activation_mw": setpoints, "final": final}

    def _decide(self) -> None:
        from flexcore.exchange.dispatch import RoundOutcome

        reps = self.reports.values()
        converged = all(r["converged"] for r in reps)
        safe = converged and all(r["safe"] for r in reps)
        self.tightened |= {n: int(r.get("rows_tightened", 0)) for n, r in self.reports.items()}
        self.outcomes.append(RoundOutcome(self.round, self.last.status, safe,
                                          float(self.last.cost_eur_per_h)))
        if all(r["ok"] for r in reps) or self.round >= self.max_rounds or not converged:
            self._end(self.last.message)
            return
        self.round += 1
        self.lazy = 0
        self._clear()

    def _end(self, message: str) -> None:
        """The safety rule over the frame's rounds; the grid to the dispatched set-points."""
        from flexcore.exchange.dispatch import choose_dispatch

        choice = choose_dispatch(self.outcomes, keep_cheapest_safe=self.keep_cheapest_safe,
                                 dispatch_unsafe=self.dispatch_unsafe)
        msg = "; ".join(m for m in (choice.message, message) if m)
        self._finish(choice.verdict.value, msg, choice.round)

    def _finish(self, status: str, message: str, k: int | None = None) -> None:
        """The frame's record; the grid ends the frame at round ``k``'s set-points (None:
        zero) and every DSO learns which round was dispatched."""
        r = self.cleared.get(k) if k is not None else None
        ok = r is not None
        final = {}
        if k != self.grid_round and (k is not None or self.grid_round is not None):
            final = {"TSO": {"setpoint[MW]": self._setpoints(r, -1 if k is None else k,
                                                             final=True)}}
        areas = {}
        if ok:
            for n, d in self.desks.items():
                if n == MV:
                    continue
                x = r.activation_mw[n]
                areas[n] = {"delivered_mw": float(x.sum()),
                            "cost_eur_per_h": float(np.abs(x) @ d["bids"].price_eur_per_mwh),
                            "point": r.points.get(n), "slack_dv_pu": r.slack_dv_pu.get(n, 0.0),
                            "rounds": self.reports.get(n, {}).get("rounds", 0)}
        self._eout = {n: {"to_dso": {"frame": self.frame, "round": self.round, "final": True,
                                     "dispatched_round": k}} for n in self.desks}
        self._eout["TSO"] = {**final.get("TSO", {}), "clearing": {
            "frame": self.frame, "status": status, "message": message,
            "dispatched": ok, "round": k if ok else self.round, "dispatched_round": k,
            "rounds_run": self.round, "rows_tightened": sum(self.tightened.values()),
            "request_mw": self.request[self.frame],
            "cost_eur_per_h": float(r.cost_eur_per_h) if ok else math.nan,
            "mv_point": r.mv_point if ok else None, "areas": areas,
            "packages_verified": self.verified, "verify_time_s": self.t_verify,
            "privacy": self.privacy, "clearings": self.clearings,
            "rows_held": sum(_rows(p) for p in self.packages.values()),
            "links": len(self.slack_columns),
            "clearing_time_s": self.t_clear,
            "build_time_s": r.build_time_s if r is not None else 0.0,
            "solve_time_s": r.solve_time_s if r is not None else 0.0}}
        self.done = True

    def get_data(self, outputs):
        out = {eid: {a: self._eout[eid][a] for a in attrs if a in self._eout.get(eid, {})}
               for eid, attrs in outputs.items()}
        self._log("sent", {eid: v for eid, v in out.items() if v})
        return out


def _rows(package) -> int:
    """Constraint rows in a package as the TSO holds it (format 1: both sides of every
    voltage and loading row at every point; format 2: its published rows)."""
    from flexcore.exchange.hardened import HardenedPackage

    if isinstance(package, HardenedPackage):
        return int(sum(len(a) for a in package.rows_a))
    return 2 * package.m * (len(package.vm_rows) + len(package.loading_rows))


def main() -> None:
    from simulators import start_simulation

    start_simulation(RegionTSO())


if __name__ == "__main__":
    main()
