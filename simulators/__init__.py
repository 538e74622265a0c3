"""Thin mosaik wrappers over flexcore (BuildingSim, FPUSim, GridSim) and their base class.

The district (building table, grid preparation) comes from
:mod:`flexcore.grid.district_grid`, the frames from the scenario's
:class:`flexcore.district.clock.FrameClock`, so that every simulator and agent sees the
same district and the same time axis: each simulator gets ``clock=clock.to_dict()`` (JSON,
so it crosses process boundaries) and maps mosaik time to frames with
``clock.index_at(time)``; the next step is ``time + clock.step_s``.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from typing import Any

import mosaik_api_v3

PR_SET_PDEATHSIG = 1  #: prctl option (linux/prctl.h)


class FrameSimulator(mosaik_api_v3.Simulator):
    """Base of every flexcosim mosaik simulator: ``init`` returns the META given to the
    constructor, ``get_data`` serves the requested attributes from ``self._out`` (what the
    last ``step`` produced; attributes it did not produce are left out)."""

    def __init__(self, meta: dict) -> None:
        super().__init__(meta)
        self._out: dict = {}

    def init(self, sid, time_resolution=1.0, **sim_params):
        return self.meta

    def get_data(self, outputs):
        return {eid: {a: self._out[a] for a in attrs if a in self._out}
                for eid, attrs in outputs.items()}


def meta_from_table(models: dict[str, dict[str, Any]], *, sim_type: str,
                    extra_methods: tuple[str, ...] = ()) -> dict:
    """mosaik META from a compact table ``{model: {"public", "params", "attrs", ...}}``."""
    return {"api_version": "3.0", "type": sim_type, "models": models,
            "extra_methods": list(extra_methods)}


#: BuildingProfiles by (building table content, seed, pv_penetration): BuildingSim and
#: FPUSim of one process (``starter = "python"``) compute the district's year once
_PROFILES: dict[tuple, Any] = {}
_PROFILES_KEPT = 4


def building_profiles(table, *, seed: int, pv_penetration: float):
    """The district's :class:`~flexcore.district.profiles.BuildingProfiles`, computed once
    per process for the same table, seed and penetration (read-only once built)."""
    import pandas as pd

    from flexcore.district.profiles import BuildingProfiles

    key = (tuple(map(str, table.columns)),
           pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes(),
           int(seed), float(pv_penetration))
    hit = _PROFILES.get(key)
    if hit is None:
        hit = BuildingProfiles.from_table(table, seed=seed, pv_penetration=pv_penetration)
        for arr in (hit._load_kw, hit._pv_kw, hit._tan_phi, hit.annual_kwh):
            arr.flags.writeable = False  # shared by the simulators of the process
        if len(_PROFILES) >= _PROFILES_KEPT:
            _PROFILES.clear()
        _PROFILES[key] = hit
    return hit


def end_with_parent(*, poll_s: float = 1.0) -> None:
    """Make a simulator process (``starter = "cmd"``) end when its parent (the mosaik
    runner) ends, even on SIGKILL, and leave Ctrl-C to the parent.

    * SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group; the runner
      stops the children itself (no KeyboardInterrupt traceback from each child);
    * Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, the kernel sends SIGTERM when the parent
      dies (SIGTERM keeps its default action: the process ends at once, even inside a long
      computation in C, quietly);
    * everywhere: a daemon thread that ends the process when the parent pid changes
      (the process was re-parented), checked every ``poll_s`` seconds.
    """
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still applies
    if os.getppid() != parent or parent == 1:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(poll_s):
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


#: loguru modules whose records below :data:`MOSAIK_LOG_LEVEL` are dropped
MOSAIK_LOGGERS = ("mosaik", "mosaik_api_v3")
MOSAIK_LOG_LEVEL = "WARNING"


def quiet_mosaik_logging(level: str = MOSAIK_LOG_LEVEL) -> bool:
    """Show mosaik's and mosaik-api's loguru records (``Starting 'GridSim-0' ...``,
    ``Simulation finished successfully``, "tries to connect") from ``level`` up only.

    Replaces loguru's default stderr handler by one that applies ``level`` to the
    :data:`MOSAIK_LOGGERS` (other modules as before); a loguru configuration of the caller
    (the default handler already removed) is left alone. Returns True if it changed it.
    Called by :func:`start_simulation` (simulator processes) and by
    ``scenarios.runner.run_scenario`` (the runner process)."""
    try:
        from loguru import logger
    except ImportError:  # a mosaik without loguru: nothing to quieten
        return False
    try:
        logger.remove(0)  # loguru's default handler (stderr, DEBUG)
    except ValueError:
        return False
    logger.add(sys.stderr, filter={name: level for name in MOSAIK_LOGGERS})
    for name in MOSAIK_LOGGERS:
        logger.enable(name)
    return True


def start_simulation(sim: mosaik_api_v3.Simulator) -> None:
    """``main()`` of every simulator module: :func:`end_with_parent`, mosaik-api's loguru
    output from WARNING up only (:func:`quiet_mosaik_logging`: no "tries to connect"
    lines), then mosaik's ``start_simulation``."""
    end_with_parent()
    quiet_mosaik_logging()
    mosaik_api_v3.start_simulation(sim, configure_logging=False)
