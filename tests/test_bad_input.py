"""The bad-input case suite: one folder per case under ``tests/cases/bad_input/``.

Each folder holds ``case.toml``::

    command = ["tso", "clear", "--package", "{tmp}/pkg", "--bids", "{case}/bids.csv", ...]
    exit_code = 2                       # what ``flexcosim`` must return
    message = "fragment"                # the one error line must contain it (exit 2 only)
    setup = "module:function"           # optional, or a list: called as
                                        # function(case=<folder>, tmp=<temp folder>) first

plus its input files. ``{case}`` is the case folder, ``{tmp}`` a fresh temp folder, ``{root}``
the repository root. The runner runs the command in-process through
:func:`scenarios.cli.main` and asserts the exit code; for exit 2, that stderr is exactly one
line starting with ``flexcosim: error:`` that contains ``message``; for every case, that no
traceback was printed. (Style of power-grid-model's validation cases.) Helpers for ``setup``
live in ``tests/cases/bad_input/setup_helpers.py``.
"""
from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

from scenarios.cli import main

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "cases" / "bad_input"
CASE_KEYS = {"command", "exit_code", "message", "setup", "description"}


def _cases() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if (p / "case.toml").is_file())


def _load(case: Path) -> dict:
    spec = tomllib.loads((case / "case.toml").read_text())
    unknown = set(spec) - CASE_KEYS
    assert not unknown, f"{case.name}/case.toml: unknown key(s) {sorted(unknown)}"
    assert isinstance(spec.get("command"), list) and spec["command"], "command: a list"
    assert isinstance(spec.get("exit_code"), int), "exit_code: an int"
    if spec["exit_code"] == 2:
        assert spec.get("message"), f"{case.name}: an exit-2 case needs a message fragment"
    return spec


def _run_setup(spec: dict, case: Path, tmp: Path) -> None:
    setups = spec.get("setup", [])
    for target in [setups] if isinstance(setups, str) else setups:
        module, _, func = target.partition(":")
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        getattr(importlib.import_module(module), func)(case=case, tmp=tmp)


def test_the_suite_has_cases():
    assert len(_cases()) >= 20


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.name)
def test_bad_input_case(case: Path, tmp_path: Path, capsys, monkeypatch):
    spec = _load(case)
    _run_setup(spec, case, tmp_path)
    capsys.readouterr()
    args = [a.format(case=case, tmp=tmp_path, root=ROOT) for a in spec["command"]]
    if "--out" not in args and spec["command"][:2] == ["tso", "clear"]:
        args += ["--out", str(tmp_path / "CLEARING.json")]
    monkeypatch.chdir(tmp_path)  # nothing a command writes by default lands in the repo
    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code == spec["exit_code"], f"exit {code}, expected {spec['exit_code']}\n{err}{out}"
    if spec["exit_code"] == 2:
        lines = err.strip("\n").split("\n")
        assert len(lines) == 1, f"expected one error line, got:\n{err}"
        assert lines[0].startswith("flexcosim: error: "), lines[0]
        assert spec["message"] in lines[0], f"{spec['message']!r} not in {lines[0]!r}"
    elif spec.get("message"):
        assert spec["message"] in out, out
