"""The project's static checks, run from the repository root: import contracts
(``lint-imports``, setup.cfg ``[importlinter]``), ruff (pyproject.toml ``[tool.ruff]``) and
mypy (setup.cfg ``[mypy]``, strict on flexcore.exchange and flexcore.market), plus the one
runtime check a static graph cannot make: importing the TSO side loads no grid code."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: what ruff checks; to be widened to "." once the whole tree passes
RUFF_TARGETS = ["."]


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, (f"{' '.join(args)} exited {proc.returncode}\n"
                                  f"{proc.stdout}\n{proc.stderr}")


def test_import_contracts_are_kept():
    _run([_tool("lint-imports"), "--no-cache"])


def test_ruff():
    _run([_tool("ruff"), "check", *RUFF_TARGETS])


def test_mypy_strict_exchange_and_market():
    # the files come from setup.cfg [mypy]; the cache (.mypy_cache) makes reruns ~1 s
    _run([sys.executable, "-m", "mypy"])


def test_tso_side_loads_no_grid_code():
    """flexcore.exchange and flexcore.market load neither pandapower nor mosaik (nor pyomo
    until backend="pyomo" is used); the TSO agent loads no pandapower."""
    code = """
import sys
import flexcore.exchange.bids, flexcore.exchange.clearing, flexcore.exchange.package
import flexcore.market
bad = [m for m in ("pandapower", "mosaik", "mosaik_api_v3", "pyomo") if m in sys.modules]
assert not bad, f"flexcore.market/exchange loaded {bad}"
import agents.tso_agent
assert "pandapower" not in sys.modules, "agents.tso_agent loaded pandapower"
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_no_import_cycle():
    """No module imports itself through others, lazy imports inside functions included
    (grimp builds the graph import-linter checks the layers on)."""
    import grimp

    graph = grimp.build_graph("flexcore", "scenarios", "agents", "simulators", "bench")
    cycles = sorted({tuple(sorted((m, i))) for m in graph.modules
                     for i in graph.find_modules_directly_imported_by(m)
                     if graph.chain_exists(importer=i, imported=m)})
    assert not cycles, cycles
