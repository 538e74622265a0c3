"""The project installed as a wheel (not editable) imports completely and carries its data.

The source tree is copied to a temporary folder (so the build leaves nothing behind), built
with ``pip wheel --no-deps --no-build-isolation``, unpacked into a target folder, and a fresh
interpreter with only that target on ``PYTHONPATH``, started from an empty folder, imports
every package and module. Each ``__file__`` must lie in the target: a module that only the
source tree has would otherwise pass unnoticed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flexcore", "scenarios", "agents", "simulators", "bench")
DATA = ("flexcore/data/bergwald_buildings.csv", "flexcore/data/bergwald_streets.csv",
        "flexcore/data/bergwald_grid.json", "scenarios/bergwald.toml",
        "scenarios/simbench.toml", "scenarios/custom_fpu.toml")

IMPORT_ALL = r"""
import importlib, json, pathlib, sys
target = pathlib.Path(sys.argv[1]).resolve()
names = json.loads(sys.argv[2])
outside = {}
for name in names:
    module = importlib.import_module(name)
    path = pathlib.Path(module.__file__).resolve()
    if not path.is_relative_to(target):
        outside[name] = str(path)
print(json.dumps(outside))
"""


def _module_names(base: Path) -> list[str]:
    names = []
    for pkg in PACKAGES:
        for path in sorted((base / pkg).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(base).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _source_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_wheel_installs_every_package_module_and_data_file(tmp_path):
    # setuptools < 70.1 builds wheels only with the ``wheel`` package (in the test extra)
    assert find_spec("wheel") or find_spec("setuptools.command.bdist_wheel"), \
        "building a wheel without isolation needs the 'wheel' package: pip install -e '.[test]'"
    src = _source_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path / "dist"), str(src)], check=True,
                   cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("flexcosim-*.whl")
    target = tmp_path / "target"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)

    expected = _module_names(ROOT)
    assert _module_names(target) == expected  # every module of the source tree is shipped
    assert {"flexcore.exchange.package", "flexcore.grid.ppinternals", "scenarios.cli",
            "agents.tso_agent", "simulators.grid_sim", "bench.run_all"} <= set(expected)
    for name in DATA:
        assert (target / name).is_file() and (target / name).stat().st_size > 0, name

    empty = tmp_path / "cwd"
    empty.mkdir()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(target), json.dumps(expected)],
                          cwd=empty, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}
    points = next(target.glob("flexcosim-*.dist-info")) / "entry_points.txt"
    assert "flexcosim = scenarios.cli:main" in points.read_text()  # the console script
