"""The README's Python code runs as printed and prints the numbers its comments state.

The ```python blocks of the sections "Python API quick start" and "Writing a flexibility
unit" (up to the section's first ``###`` subsection) are executed unchanged, each section
in one namespace. A block whose first line is ``# NAME.py`` is a module the reader saves:
it is written to ``NAME.py`` in a temporary folder on ``sys.path``. ``print`` is recorded
per source line; a ``print(...)  # comment`` line must print the numbers of its comment, in
order (the comment may stop early, e.g. with ``...``).
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from flexcore.exchange.clearing import ClearingResult

README = Path(__file__).resolve().parent.parent / "README.md"
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")


def section(title: str) -> str:
    """The text of the README's ``## title`` section up to its first ``###`` subsection."""
    text = README.read_text()
    head = f"\n## {title}\n"
    assert head in text, f"README.md has no section {title!r}"
    body = text.split(head, 1)[1].split("\n## ", 1)[0]
    return body.split("\n### ", 1)[0]


def blocks(body: str, lang: str = "python") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", body, re.S | re.M)


def run_blocks(codes: list[str], ns: dict, folder: Path) -> None:
    """Execute ``codes`` in ``ns`` (modules saved to ``folder``) and check the printed
    numbers against the comments of the ``print`` lines."""
    printed: dict[tuple[str, int], list[str]] = {}

    def record(*args, sep=" ", **_kw):
        frame = sys._getframe(1)
        printed.setdefault((frame.f_code.co_filename, frame.f_lineno), []).append(
            sep.join(str(a) for a in args))

    ns["print"] = record
    sys.path.insert(0, str(folder))
    try:
        for k, code in enumerate(codes):
            first = code.splitlines()[0].strip()
            module = re.fullmatch(r"#\s*(\w+)\.py", first)
            if module:
                (folder / f"{module.group(1)}.py").write_text(code)
                sys.modules.pop(module.group(1), None)
                continue
            name = f"README block {k + 1}"
            exec(compile(code, name, "exec"), ns)  # the README's code, as printed
            for n, line in enumerate(code.splitlines(), 1):
                if not line.lstrip().startswith("print(") or "#" not in line:
                    continue
                want = NUMBER.findall(line.split("#", 1)[1])
                got = printed.get((name, n))
                assert got, f"{name} line {n} printed nothing: {line.strip()}"
                have = NUMBER.findall(got[-1])
                assert have[:len(want)] == want, (
                    f"{name} line {n}: printed {got[-1]!r}, the README says {want}")
    finally:
        sys.path.remove(str(folder))
        for mod in [m for m, v in sys.modules.items()
                    if str(folder) in str(getattr(v, "__file__", "") or "")]:
            sys.modules.pop(mod)


def test_the_comment_check_catches_a_wrong_number(tmp_path):
    with pytest.raises(AssertionError, match="the README says"):
        run_blocks(["x = 2.5\nprint('value', x)   # value 2.6 MW\n"], {}, tmp_path)
    run_blocks(["x = 2.5\nprint('value', x, 7)   # value 2.5 MW ...\n"], {}, tmp_path)


def test_python_api_quick_start_runs_as_printed(tmp_path):
    codes = blocks(section("Python API quick start"))
    assert len(codes) == 2
    ns: dict = {}
    run_blocks(codes, ns, tmp_path)
    # the figures the README's text and the comments state
    assert len(ns["bids"]) == 241 and round(float(ns["bids"].volume_mw.sum()), 2) == 3.81
    assert isinstance(ns["result"], ClearingResult) and ns["result"].status == "optimal"
    assert ns["report"].safe and ns["report"].vm_mae_pu < 1e-5
    out = ns["out"]
    assert out.safe and out.selected_round == 2
    assert round(out.clearing.cost_eur_per_h, 2) == 190.55
    assert abs(float(ns["activation"].sum()) - 1.8) < 1e-6
    assert [r.round for r in out.rounds] == [0, 1, 2]


def test_writing_a_flexibility_unit_runs_as_printed(tmp_path):
    body = section("Writing a flexibility unit")
    codes = blocks(body)
    assert codes and codes[0].startswith("# my_fpus.py")
    ns: dict = {}
    run_blocks(codes, ns, tmp_path)
    units = ns["units"]
    assert units and all(type(u).__name__ == "Fridge" for u in units)
    assert all(u.state() == {"paused": 0.0} for u in units)  # dispatched 0: still running
    assert ns["frame"].slot == 76 and ns["frame"].start.strftime("%H:%M") == "19:00"
    # the scenario TOML block registers the unit exactly as the snippet's toml_text does
    (toml_block,) = blocks(body, "toml")
    assert tomllib.loads(toml_block) == tomllib.loads(ns["toml_text"])
