"""`flexcosim bench --quick` end to end (slow: ~2 min). Checks that every benchmark runs and
writes its JSON with sane figures; timings are reported, never asserted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick_writes_every_result():
    out = ROOT / "results" / "benchmarks"
    subprocess.run([sys.executable, "-m", "scenarios.cli", "bench", "--quick"], cwd=ROOT,
                   check=True)
    sens = json.loads((out / "sensitivities.json").read_text())
    assert sens["fd_vs_jacobian_max_abs_vtdf_diff_pu_per_mw"] < 1e-3
    market = json.loads((out / "market.json").read_text())
    assert all(r["direct_status"] == "optimal" for r in market["runs"])
    compared = [r["same_optimum"] for r in market["runs"] if "same_optimum" in r]
    assert compared and all(compared)   # pyomo runs where the quick mode keeps them
    cosim = json.loads((out / "cosim.json").read_text())
    assert cosim["frames"] == 96 and cosim["summary"]["frames"] == 96
    assert cosim["summary"]["ac_violation_frames"] == 0
