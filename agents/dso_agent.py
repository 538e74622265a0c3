"""DSOAgent: the DSO's side of every frame; mosaik glue over :class:`flexcore.dso.frame.
DsoFrames` (which holds the only grid model among the agents and documents the DSO's work).

Message sequence inside one frame (mosaik time t; tiers t:0, t:1, ... of the same-time loop
``FPUSim -> DSOAgent -> TSOAgent -(weak)-> DSOAgent`` and ``TSOAgent -(weak)-> FPUSim``
inside one ``world.group()``)::

    t:0  BuildingSim, FPUSim --(load/PV, dP_base, offers)--> DSO: sets the frame's state
         and runs the AC power flow at x = 0 (no package yet);
         FPUSim --offers--> TSO --RequestMessage(frame, request)--> DSO
    t:1  DSO: no request and base case inside the limits: x = 0 is checked in AC already,
         sends the VerdictMessage (published=False; nothing to clear). Otherwise it builds
         the round-0 package (private; dso_failed if no point converges) and
         DSO --PackageMessage(round 0)--> TSO ;  TSO clears --ClearingMessage--> DSO
    t:k  DSO: format 2 with request rows: a clearing violating an unpublished row gets
         PackageMessage(same round, rows added); else AC check; final VerdictMessage
         (optimal|unsafe|dso_failed|<clearing status>, dispatch) and the frame report, or
         PackageMessage(round k+1) and the TSO clears again
    t:k' TSO --(set-points by bid pseudonym, none unless dispatch)--> FPUSim --(dP)--> GridSim

Packages cross as folder paths (flexcore.exchange.package format, never pickles) when
``exchange="files"`` (required with separate processes), or as the package object itself
in one process (``"memory"``). Either way the TSO gets only numbers and opaque keys. At the
end of the run ``dso/audit.json`` holds the privacy audit of the published packages.
"""
from __future__ import annotations

from pathlib import Path

from flexcore.district.clock import FrameClock
from flexcore.exchange.messages import (
    ClearingMessage,
    PackageMessage,
    RequestMessage,
    VerdictMessage,
    from_wire,
)
from simulators import FrameSimulator, meta_from_table

ATTRS_IN = (
    ("P_load[MW]", "consumption per building"), ("Q_load[MVAr]", "reactive consumption"),
    ("P_pv[MW]", "PV per building"), ("dP_base[MW]", "unit baselines - profile, per building"),
    ("offers", "bids of the frame"), ("from_tso", "clearing message of the TSO"),
)
ATTRS_OUT = (("to_tso", "package or verdict message"), ("report", "frame report (DSO side)"))
META = meta_from_table({"DSO": {
    "public": True,
    "params": ["grid", "catalog", "run_dir", "seed", "dso", "clock", "exchange", "engine"],
    "attrs": [a for a, _ in ATTRS_IN + ATTRS_OUT],
}}, sim_type="event-based")  # event-based: every input triggers, outputs non-persistent


def _merge(inputs: dict, attr: str) -> dict:
    out: dict = {}
    for values in inputs.get(attr, {}).values():
        out.update(values)
    return out


class DSOAgent(FrameSimulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.frames = None

    def create(self, num, model, *, grid: str, catalog: list[dict], run_dir: str, seed: int,
               dso: dict, clock: dict, exchange: str = "files", engine: str = "fast"):
        if num != 1 or self.frames is not None:
            raise ValueError("DSOAgent holds exactly one DSO entity")
        from flexcore.dso import Linearizer
        from flexcore.dso.frame import DsoFrames, catalog_bids
        from flexcore.exchange.limits import Limits
        from flexcore.grid.district_grid import BuildingInjections, district_net

        if exchange not in ("files", "memory"):
            raise ValueError(f"exchange must be 'files' or 'memory', got {exchange!r}")
        net, *buildings = district_net(grid)
        inj = BuildingInjections(net, *buildings)
        # deterministic salt (same seed -> same keys); the key map stays with the DSO
        lin = Linearizer(net, catalog_bids(catalog, inj.bus_of), salt=f"bergwald-{seed}",
                         limits=Limits.from_dict(dso["limits"]), engine=engine)
        self.clock, self.exchange = FrameClock.of(clock), exchange
        self.frames = DsoFrames(lin, inj, dso, self.clock)
        self.dir = Path(run_dir)
        (self.dir / "dso").mkdir(parents=True, exist_ok=True)
        lin.keymap.save(self.dir / "dso" / "KEYMAP.json")  # private: for the validator
        return [{"eid": "DSO", "type": model}]

    def _publish(self, package, frame: int, round_: int) -> dict:
        """The package message: the object itself (in-process runs) or a folder path; the
        package is already in the form ``[dso] privacy`` asks for (flexcore.dso.frame)."""
        if self.exchange == "memory":
            return PackageMessage(frame, round_, package=package).to_wire()
        from flexcore.exchange.package import save_package

        path = save_package(package, self.dir / "exchange" / f"r{round_}")
        return PackageMessage(frame, round_, path=str(path)).to_wire()

    def step(self, time, inputs, max_advance):
        data = inputs.get("DSO", {})
        frame = self.clock.index_at(time)
        self._out = {}
        if "offers" in data:
            self._send(frame, self.frames.open_frame(
                frame, p_load_mw=_merge(data, "P_load[MW]"),
                q_load_mvar=_merge(data, "Q_load[MVAr]"), p_pv_mw=_merge(data, "P_pv[MW]"),
                dp_base_mw=_merge(data, "dP_base[MW]"),
                offers=[o for batch in data["offers"].values() for o in batch]))
        for wire in data.get("from_tso", {}).values():
            msg = from_wire(wire)
            if isinstance(msg, RequestMessage):
                self._send(frame, self.frames.on_request(msg.frame, msg.request_mw))
            elif isinstance(msg, ClearingMessage):
                self._send(frame, self.frames.on_clearing(frame, msg.round, msg.clearing))
            else:
                raise ValueError(f"DSOAgent expects request or clearing messages, got "
                                 f"{type(msg).__name__}")
        return None

    def _send(self, frame: int, step) -> None:
        if step is None:  # waiting for the request, or a request for a closed frame
            return
        if step.verdict is None:
            self._out["to_tso"] = self._publish(step.package, frame, step.round)
            return
        v = step.verdict
        self._out["to_tso"] = VerdictMessage(frame, v.rounds, v.verdict, safe=v.safe,
                                             dispatch=v.dispatch, message=v.message,
                                             published=step.published).to_wire()
        self._out["report"] = step.report

    def finalize(self) -> None:
        """The run folder's ``dso/audit.json``: the audit of the published packages and what
        was published (``publications``: packages, frames without one, time per package)."""
        from flexcore.runs import write_json

        write_json(self.dir / "dso" / "audit.json",
                   self.frames.audit.result() | {"publications": self.frames.publication_stats()})


def main() -> None:
    from simulators import start_simulation

    start_simulation(DSOAgent())


if __name__ == "__main__":
    main()
