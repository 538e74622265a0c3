"""Fuzzing the public inputs through the command line (hypothesis, fixed seeds).

Property, for every generated input: ``flexcosim`` exits 0, 1 or 2 and never prints a
traceback; exit 3 (an internal error) is reserved for real bugs. Inputs: ``BIDS.csv``
(random bytes, rows, columns and encodings) and the package manifest (mutated JSON values,
types and shapes) through ``tso clear`` on a small fixed package, and the scenario TOML
through ``run --check``. ``derandomize=True`` makes every run draw the same examples.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import string
import tempfile
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexcore.exchange.package import FORMAT as PACKAGE_FORMAT
from flexcore.exchange.package import SIGNATURE, package_digest
from flexcore.exchange.signing import generate_keypair, sign_digest, write_record
from scenarios.cli import main
from tests.cases.bad_input.setup_helpers import write_small_package

FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def run_cli(args: list[str]) -> tuple[int, str]:
    """``flexcosim args`` in-process: (exit code, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return int(code), out.getvalue()


def fresh(tmp_path: Path) -> Path:
    """A new folder per example (hypothesis reuses the test's ``tmp_path``)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def assert_handled(code: int, text: str) -> None:
    assert code in (0, 1, 2) and "Traceback" not in text, f"exit {code}:\n{text}"
    if code == 2:
        lines = text.strip("\n").split("\n")
        assert lines[-1].startswith("flexcosim: error: ") or lines[0].startswith("usage:"), text


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """grid.json, bids_ok.csv, the package pkg/ of bids a, b, c (setup_helpers), signed with
    the test key pair test.key / test.key.pub (``flexcosim keygen``'s format)."""
    tmp = tmp_path_factory.mktemp("small")
    write_small_package(case=tmp, tmp=tmp)
    generate_keypair(tmp / "test.key")
    manifest = json.loads((tmp / "pkg" / "manifest.json").read_text())
    write_record(sign_digest(manifest["package_sha256"], tmp / "test.key",
                             purpose=PACKAGE_FORMAT), tmp / "pkg" / SIGNATURE)
    return tmp


# --------------------------------------------------------------------------- BIDS.csv
COLUMNS = ["id", "bus", "volume_mw", "price_eur_per_mwh", "min_mw", "indivisible"]
cell = st.one_of(
    st.sampled_from(["a", "b", "c", "zz", "", "nan", "inf", "-inf", "1e308", "1e9", "-0.01",
                     "0.02", "0", "true", "false", "yes", "2", "1_000", "0x10", " 0.01 ",
                     '"q,uoted"', "1e-320", "9" * 40]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.text(max_size=8),
)


@st.composite
def bid_files(draw) -> bytes:
    kind = draw(st.sampled_from(["rows", "rows", "rows", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    header = draw(st.one_of(
        st.just(["id", "volume_mw", "price_eur_per_mwh"]),
        st.permutations(COLUMNS),
        st.lists(st.sampled_from(COLUMNS + ["ID", "min_MW", ""]), max_size=7),
    ))
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=len(header) + 2), max_size=6))
    if draw(st.booleans()):  # mostly well-formed ids a, b, c with plausible numbers
        rows = [[("abc"[k % 3] if h == "id" else draw(cell)) for h in header]
                for k in range(draw(st.integers(1, 4)))]
    sep = draw(st.sampled_from([",", ",", ";", "\t"]))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = eol.join(sep.join(r) for r in [header, *rows]) + eol
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]))
    return text.encode(encoding, errors="replace")


@FUZZ
@given(data=bid_files(), request_mw=st.sampled_from(["0", "0.03", "-0.02", "1e9", "nan"]))
def test_fuzz_bids_through_tso_clear(small, tmp_path, data, request_mw):
    tmp_path = fresh(tmp_path)
    bids = tmp_path / "bids.csv"
    bids.write_bytes(data)
    code, text = run_cli(["tso", "clear", "--package", str(small / "pkg"), "--bids", str(bids),
                          "--request-mw", request_mw, "--out", str(tmp_path / "C.json")])
    assert_handled(code, text)


def test_fuzz_fixture_clears(small, tmp_path):
    """The fuzzed clearing is not vacuous: the fixed package and bids clear optimally."""
    code, text = run_cli(["tso", "clear", "--package", str(small / "pkg"), "--bids",
                          str(small / "bids_ok.csv"), "--request-mw", "0.03",
                          "--out", str(tmp_path / "C.json")])
    assert code == 0, text
    assert json.loads((tmp_path / "C.json").read_text())["status"] == "optimal"


# --------------------------------------------------------------------------- manifest
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=8,
)


def _paths(node, prefix=()):
    """Every path (tuple of keys / indices) into a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for k, v in enumerate(node):
            yield from _paths(v, (*prefix, k))


def reseal(directory: Path, manifest: dict, key: Path) -> bool:
    """Recompute the package digest of the mutated manifest and re-sign it with the test
    ``key`` (as a DSO holding the key would), so that the reader gets past the digest and
    signature checks to the schema, shape and array checks behind them. Returns False when
    the manifest has no digest to sign (NaN/Infinity have no canonical JSON, or the digest
    field itself was mutated away): then the signature file is dropped."""
    sig = directory / SIGNATURE
    sig.unlink(missing_ok=True)
    if not isinstance(manifest.get("package_sha256"), str):
        return False
    try:
        manifest["package_sha256"] = package_digest(manifest)
    except ValueError:  # NaN/Infinity: the reader refuses them before any digest
        return False
    write_record(sign_digest(manifest["package_sha256"], key, purpose=PACKAGE_FORMAT), sig)
    return True


def clear_signed(small: Path, pkg: Path, out: Path) -> tuple[int, str]:
    """``tso clear`` trusting only the test key (a missing or foreign signature: exit 2)."""
    return run_cli(["tso", "clear", "--package", str(pkg), "--bids",
                    str(small / "bids_ok.csv"), "--request-mw", "0.03",
                    "--trust", str(small / "test.key.pub"), "--out", str(out)])


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_through_tso_clear(small, tmp_path, data):
    tmp_path = fresh(tmp_path)
    pkg = tmp_path / "pkg"
    shutil.copytree(small / "pkg", pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    doc = copy.deepcopy(manifest)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(string.ascii_lowercase, min_size=1, max_size=6))] = \
                data.draw(json_values)
        else:
            parent[path[-1]] = data.draw(json_values)
    signed = reseal(pkg, doc, small / "test.key")
    (pkg / "manifest.json").write_text(json.dumps(doc))
    code, text = clear_signed(small, pkg, tmp_path / "C.json")
    assert_handled(code, text)
    if signed:  # the signature checks passed: whatever refused it is behind them
        assert "signature" not in text.lower() and "digest mismatch" not in text, text


def test_reseal_reaches_the_schema(small, tmp_path):
    """The helper is not vacuous: the signed package clears with ``--trust``; a mutated
    manifest without a new signature is refused by the signature check; resealed, one wrong
    type is refused by the schema (exit 2, naming the field), one wrong shape by the shape
    check, neither by a checksum or signature."""
    pkg = tmp_path / "pkg"
    shutil.copytree(small / "pkg", pkg)
    code, text = clear_signed(small, pkg, tmp_path / "C0.json")
    assert code == 0, text
    doc = json.loads((pkg / "manifest.json").read_text())
    doc["created_utc"] = "2000-01-01T00:00:00+00:00"
    doc["package_sha256"] = package_digest(doc)
    (pkg / "manifest.json").write_text(json.dumps(doc))
    code, text = clear_signed(small, pkg, tmp_path / "C1.json")
    assert code == 2 and "signature" in text.lower(), text
    for field, value, expect in (("created_utc", 12, "created_utc"),
                                 ("shapes", {"p_flex_mw": [3, 99]}, "shapes")):
        doc = json.loads((small / "pkg" / "manifest.json").read_text())
        doc[field] = value
        assert reseal(pkg, doc, small / "test.key")
        (pkg / "manifest.json").write_text(json.dumps(doc))
        code, text = clear_signed(small, pkg, tmp_path / "C.json")
        assert code == 2 and expect in text, text
        assert "checksum" not in text.lower() and "signature" not in text.lower(), text


# --------------------------------------------------------------------------- scenario TOML
toml_values = st.one_of(
    st.booleans(), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["all", "64-80", "0-99999", "18:00", "24:00", "99:99", "battery",
                     "winter_workday", "castle", "grid_loads", "abs_cost"]),
    st.lists(st.one_of(st.integers(-3, 100), st.floats(-1, 2), st.text(max_size=4)),
             max_size=3),
    st.dictionaries(st.sampled_from(["single_house", "castle", "x"]),
                    st.one_of(st.floats(-1, 2), st.text(max_size=3)), max_size=2),
)


def _base_scenario(small: Path) -> dict:
    return {
        "scenario": {"name": "fuzz", "seed": 1, "grid": str(small / "grid.json"),
                     "buildings": "grid_loads", "day_types": ["winter_workday"],
                     "slots": "72-73", "pv_penetration": 0.5, "resolution_min": 15},
        "simulation": {"starter": "python", "package_exchange": "auto"},
        "request": {"default_mw": 0.0,
                    "window": [{"start": "18:00", "end": "19:00", "mw": 0.02}]},
        "dso": {"operating_points": [0.0, 0.5, 1.0], "relinearize_every": 4,
                "refine_rounds": 2, "limits": {"vm_min_pu": 0.95, "vm_max_pu": 1.05}},
        "market": {"objective": "abs_cost", "mip_rel_gap": 1e-6},
        "results": {"plots": False},
        "fpu": [{"class": "battery", "building_types": ["single_house"],
                 "penetration": 0.5, "params": {}}],
    }


def test_fuzz_base_scenario_checks_ok(small, tmp_path):
    """The fuzzed scenario is not vacuous: unmutated, it passes ``run --check``."""
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(_base_scenario(small)))
    code, text = run_cli(["run", "--check", str(path)])
    assert code == 0 and text.startswith("ok"), text


@settings(FUZZ, max_examples=25)  # each --check loads the grid and builds the buildings
@given(data=st.data())
def test_fuzz_scenario_through_run_check(small, tmp_path, data):
    tmp_path = fresh(tmp_path)
    doc = _base_scenario(small)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from([p for p in _paths(doc) if p][:200]))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(toml_values)
    path = tmp_path / "s.toml"
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # a shape TOML cannot hold (e.g. a table in an array)
        text = json.dumps(doc)       # then the reader must refuse it as "not valid TOML"
    path.write_text(text)
    code, out = run_cli(["run", "--check", str(path)])
    assert_handled(code, out)


@settings(max_examples=40, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=120))
def test_fuzz_scenario_bytes_through_run_check(tmp_path, raw):
    path = tmp_path / "s.toml"
    path.write_bytes(b"[scenario]\n" + raw)
    code, out = run_cli(["run", "--check", str(path)])
    assert_handled(code, out)
