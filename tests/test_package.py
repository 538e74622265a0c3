"""The sensitivity package: round trip, tampering, no topology, screening (issue: DSO side)."""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil

import numpy as np
import pytest

from flexcore.dso.linearizer import KeyMap, Linearizer
from flexcore.exchange.bids import BidError, BidTable, read_bids, write_bids
from flexcore.exchange.package import (
    ARRAY_NAMES,
    PackageError,
    load_package,
    package_digest,
    save_package,
    screen,
)
from flexcore.grid import grids


@pytest.fixture(scope="module")
def rural_linearizer():
    net = grids.load_grid("simbench:1-LV-rural1--0-no_sw")
    loads = net.load
    bids = BidTable(ids=tuple(f"bid{k}" for k in range(len(loads))),
                    volume_mw=np.where(np.arange(len(loads)) % 3 == 0, -0.02, 0.03),
                    price_eur_per_mwh=np.linspace(50, 150, len(loads)), bus=loads.bus.to_numpy())
    return Linearizer(net, bids, salt="fixed")


@pytest.fixture(scope="module")
def package(rural_linearizer):
    return rural_linearizer.linearize((0.0, 0.5, 1.0)).package


def _reseal(folder, manifest):
    """Write a tampered manifest like an attacker who recomputes the (unkeyed) digest."""
    manifest["package_sha256"] = package_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _rewrite_arrays(folder, **changes):
    """Tamper like an attacker who also fixes the checksums."""
    with np.load(folder / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (folder / "arrays.npz").write_bytes(buf.getvalue())
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["arrays_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    _reseal(folder, manifest)


def test_round_trip_is_exact(package, tmp_path):
    save_package(package, tmp_path / "pkg")
    back = load_package(tmp_path / "pkg", allow_full=True)
    for name in ARRAY_NAMES:
        assert np.array_equal(getattr(back, name), getattr(package, name))
    assert back.columns == package.columns and back.vm_rows == package.vm_rows
    assert back.points == package.points and back.limits == package.limits


@pytest.mark.parametrize("tamper, message", [
    ("bytes", "checksum mismatch"),
    ("version", "unsupported package version 3"),
    ("format", "'format'"),
    ("nan", "non-finite value"),
    ("shape", "array 'vtdf' has shape"),
    ("duplicate", "duplicate key"),
    ("missing", "package file missing"),
    ("json", "not valid JSON"),
])
def test_tampered_package_is_rejected_naming_the_problem(package, tmp_path, tamper, message):
    folder = save_package(package, tmp_path / "pkg")
    manifest = json.loads((folder / "manifest.json").read_text())
    if tamper == "bytes":
        data = bytearray((folder / "arrays.npz").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "arrays.npz").write_bytes(bytes(data))
    elif tamper == "version":
        manifest["version"] = 3
    elif tamper == "format":
        manifest["format"] = "something-else"
    elif tamper == "nan":
        vtdf = package.vtdf.copy()
        vtdf[1, 2, 3] = np.nan
        _rewrite_arrays(folder, vtdf=vtdf)
        manifest = json.loads((folder / "manifest.json").read_text())
    elif tamper == "shape":
        _rewrite_arrays(folder, vtdf=package.vtdf[:, :-1, :])
        manifest = json.loads((folder / "manifest.json").read_text())
    elif tamper == "duplicate":
        manifest["vm_rows"][1] = manifest["vm_rows"][0]
        _reseal(folder, manifest)
    elif tamper == "missing":
        (folder / "arrays.npz").unlink()
    if tamper == "json":
        (folder / "manifest.json").write_text("{not json")
    elif tamper != "missing":
        (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=re.escape(message)):
        load_package(folder, allow_full=True)


def test_package_contains_no_topology(package, rural_linearizer, tmp_path):
    folder = save_package(package, tmp_path / "pkg")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest) == {"format", "version", "created_utc", "columns", "vm_rows",
                             "loading_rows", "points", "limits", "screening", "shapes",
                             "arrays_sha256", "package_sha256"}
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(ARRAY_NAMES)
        assert all(npz[k].dtype == np.float64 for k in npz.files)
    net = rural_linearizer.net
    text = (folder / "manifest.json").read_text().lower()
    for word in ("line", "trafo", "bus", "lv1", "load", "geo", "ohm", "std_type"):
        assert word not in text.replace("loading_", "").replace("loading_rows", ""), word
    for name in net.bus.name.astype(str):
        assert name.lower() not in text
    # row keys are salted hashes: nothing of the bus or branch index survives in them
    assert all(re.fullmatch(r"v[0-9a-f]{10}", k) for k in package.vm_rows)
    assert all(re.fullmatch(r"l[0-9a-f]{10}", k) for k in package.loading_rows)
    assert list(package.vm_rows) == sorted(package.vm_rows)


def test_keymap_maps_keys_back_to_the_grid(rural_linearizer, tmp_path):
    km = rural_linearizer.keymap
    path = km.save(tmp_path / "KEYMAP.json")
    data = json.loads(path.read_text())
    assert set(data) >= {"columns", "vm_pu", "loading_percent"}
    assert data["columns"]["bid0"] == int(rural_linearizer.bids.bus[0])
    assert {v[0] for v in data["loading_percent"].values()} == {"line", "trafo"}
    assert KeyMap.load(path) == km
    # the same salt gives the same keys: refinement packages stay compatible
    again = Linearizer(rural_linearizer.net, rural_linearizer.bids, salt="fixed")
    assert again.keymap.vm_pu == km.vm_pu


def test_screening_drops_only_rows_that_cannot_reach_a_limit(package, rural_linearizer):
    bids = rural_linearizer.bids
    screened, rep = screen(package, lower_mw=bids.lower_mw, upper_mw=bids.upper_mw,
                           margin_vm_pu=0.0, margin_loading_percent=0.0)
    n_rows = len(package.vm_rows) + len(package.loading_rows)
    assert rep.vm_rows_kept + rep.loading_rows_kept < n_rows
    dropped_v = [k for k, key in enumerate(package.vm_rows) if key not in screened.vm_rows]
    dropped_l = [k for k, key in enumerate(package.loading_rows)
                 if key not in screened.loading_rows]
    rng = np.random.default_rng(0)
    lim = package.limits
    for _ in range(500):  # random activations within the bids' bounds, every point
        x = rng.uniform(bids.lower_mw, bids.upper_mw)
        for i in range(package.m):
            dp = x - package.p_flex_mw[i]
            v = package.vm_pu[i, dropped_v] + package.vtdf[i][dropped_v] @ dp
            l = package.loading_percent[i, dropped_l] + package.ltdf[i][dropped_l] @ dp
            assert ((v >= lim.vm_min_pu) & (v <= lim.vm_max_pu)).all()
            assert ((l >= lim.loading_min_percent) & (l <= lim.loading_max_percent)).all()
    assert screened.screening["loading_rows_kept"] == rep.loading_rows_kept


def test_bid_file_errors_name_the_culprit(tmp_path):
    good = BidTable(ids=("a", "b"), volume_mw=np.array([0.01, -0.02]),
                    price_eur_per_mwh=np.array([10.0, 20.0]), bus=np.array([3, 4]))
    path = write_bids(good, tmp_path / "BIDS.csv")
    back = read_bids(path, require_bus=True)
    assert back.ids == good.ids and np.array_equal(back.volume_mw, good.volume_mw)
    cases = {
        "id,bus,volume_mw,price_eur_per_mwh\na,1,nan,3\n": "not finite",
        "id,bus,volume_mw,price_eur_per_mwh\na,1,0.1,x\n": "price_eur_per_mwh",
        "id,bus,volume_mw\na,1,0.1\n": "missing column",
        "id,bus,volume_mw,price_eur_per_mwh\na,1,0.1,3\na,2,0.1,3\n": "duplicate bid id",
        "id,bus,volume_mw,price_eur_per_mwh\na,b1,0.1,3\n": "'bus' must be an integer",
        "id,bus,volume_mw,price_eur_per_mwh,min_mw\na,1,0.1,3,0.5\n": "exceeds |volume_mw|",
    }
    for text, msg in cases.items():
        path.write_text(text)
        with pytest.raises(BidError, match=re.escape(msg)):
            read_bids(path, require_bus=True)
    path.write_text("id,volume_mw,price_eur_per_mwh\na,0.1,3\n")
    with pytest.raises(BidError, match="bus"):
        read_bids(path, require_bus=True)
    shutil.rmtree(tmp_path)


def test_bid_file_encodings_duplicates_and_caps(tmp_path):
    from flexcore.exchange.bids import MAX_BIDS

    plain = "id,volume_mw,price_eur_per_mwh\na,0.5,30\nb,-0.25,40\n"
    path = tmp_path / "BIDS.csv"
    path.write_bytes(plain.encode())
    ref = read_bids(path)
    path.write_bytes(b"\xef\xbb\xbf" + plain.encode())  # what spreadsheet programs write
    bom = read_bids(path)
    assert bom.ids == ("a", "b") and np.array_equal(bom.volume_mw, ref.volume_mw)
    path.write_bytes((plain + "c\xe9,0.1,3\n").encode("latin-1"))
    with pytest.raises(BidError, match=r"BIDS.csv:4: not UTF-8 text \(byte 0xe9"):
        read_bids(path)
    path.write_text(plain + "c,0.1,3\na,0.1,3\n")
    with pytest.raises(BidError, match=r"BIDS.csv:5: duplicate bid id 'a' \(first on line 2\)"):
        read_bids(path)
    # the caps: at the cap accepted, beyond it refused with the line
    path.write_text("id,volume_mw,price_eur_per_mwh\na,-1000,1e6\n")
    assert read_bids(path).volume_mw[0] == -1000.0
    for row, msg in (("a,1000.5,3", "'volume_mw' = 1000.5"), ("a,1,-2e6", "'price_eur_per_mwh'")):
        path.write_text("id,volume_mw,price_eur_per_mwh\n" + row + "\n")
        with pytest.raises(BidError, match=f"BIDS.csv:2: column {msg}.*plausibility cap"):
            read_bids(path)
    with pytest.raises(BidError, match="plausibility cap"):
        BidTable(ids=("a",), volume_mw=np.array([1e9]), price_eur_per_mwh=np.array([1.0]))
    rows = "".join(f"x{k},0.001,1\n" for k in range(MAX_BIDS))
    path.write_text("id,volume_mw,price_eur_per_mwh\n" + rows)
    assert len(read_bids(path)) == MAX_BIDS
    path.write_text("id,volume_mw,price_eur_per_mwh\n" + rows + "y,0.001,1\n")
    with pytest.raises(BidError, match=f"BIDS.csv:{MAX_BIDS + 2}: more than {MAX_BIDS} bids"):
        read_bids(path)
    path.write_text("id,volume_mw,price_eur_per_mwh,min_MW\na,0.5,30,0.1\n")
    with pytest.raises(BidError, match=r"unknown column\(s\) \['min_MW'\]"):
        read_bids(path)


def test_linearizer_names_bids_beyond_the_transformers():
    """Bergwald is fed by three 0.63 MVA transformers: a 2 MW bid cannot be carried, a 1.8 MW
    one passes this check (pandapower's own table gives the capacity)."""
    from flexcore.dso.linearizer import Linearizer, feeding_capacity_mva
    from flexcore.grid.grids import load_grid

    net = load_grid("bergwald")
    assert feeding_capacity_mva(net) == pytest.approx(float(net.trafo.sn_mva.sum()))
    assert feeding_capacity_mva(net) == pytest.approx(1.89)
    bus = int(net.load.bus.iloc[0])
    big = BidTable(ids=("ok", "big"), volume_mw=np.array([0.01, -2.0]),
                   price_eur_per_mwh=np.array([1.0, 1.0]), bus=np.array([bus, bus]))
    with pytest.raises(BidError, match=rf"bid 'big' at bus {bus}: \|volume_mw\| = 2 MW "
                                       r"exceeds the 1.89 MVA"):
        Linearizer(net, big)
    lin = Linearizer(net, big.subset(["ok"]))
    with pytest.raises(BidError, match="bid 'ok'"):
        lin.set_bid_volumes(np.array([1.9]))
    lin.set_bid_volumes(np.array([1.8]))
    assert lin.bids.volume_mw[0] == 1.8
