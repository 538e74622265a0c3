"""mosaik's and mosaik-api's loguru INFO lines are left out of runs (simulator processes
and the runner), warnings are kept (:func:`simulators.quiet_mosaik_logging`).

Each case runs in a fresh interpreter, where loguru has its default handler, and emits
records as if from mosaik's modules. The end-to-end check (a ``starter = "cmd"`` run prints
no INFO line) is in tests/test_scenario.py (test_separate_processes_same_numbers).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EMIT = """
from loguru import logger
for module in ("mosaik.async_scenario", "mosaik_api_v3", "my_module"):
    exec("logger.info('info from ' + m); logger.warning('warning from ' + m)",
         {"__name__": module, "logger": logger, "m": module})
"""


def _stderr(prelude: str) -> str:
    code = prelude + EMIT
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True)
    assert res.stdout == ""
    return res.stderr


def test_without_it_mosaik_logs_info():  # the situation the function fixes
    err = _stderr("from loguru import logger; logger.enable('mosaik_api_v3')\n")
    assert "info from mosaik.async_scenario" in err and "info from mosaik_api_v3" in err


def test_mosaik_info_dropped_warnings_and_other_modules_kept():
    err = _stderr("from simulators import quiet_mosaik_logging\n"
                  "assert quiet_mosaik_logging() and not quiet_mosaik_logging()\n")
    assert "info from mosaik" not in err  # neither mosaik nor mosaik_api_v3
    for module in ("mosaik.async_scenario", "mosaik_api_v3", "my_module"):
        assert f"warning from {module}" in err
    assert "info from my_module" in err


def test_a_callers_loguru_configuration_is_left_alone():
    err = _stderr("import sys\nfrom loguru import logger\nlogger.remove()\n"
                  "logger.add(sys.stderr, level='DEBUG')\n"
                  "from simulators import quiet_mosaik_logging\n"
                  "assert not quiet_mosaik_logging()\n")
    assert "info from mosaik.async_scenario" in err


def test_a_flexcosim_world_starting_a_cmd_simulator_prints_no_info_line():
    """The runner's World (scenarios.runner.new_world) starts a simulator in its own
    process (``starter = "cmd"``), as run_scenario does: neither the runner nor the
    simulator prints an INFO line. Without the quieting mosaik prints "Starting 'X-0'"."""
    code = """
import mosaik_api_v3
from scenarios.runner import new_world
world = new_world({"Validator": {"cmd": "%(python)s -m agents.validator %(addr)s"}})
world.start("Validator")
world.shutdown()
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, check=True)
    lines = (res.stdout + res.stderr).splitlines()
    assert not [line for line in lines if "INFO" in line], lines[:5]
