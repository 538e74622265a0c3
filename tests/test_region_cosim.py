"""The region as a mosaik co-simulation with DSOs as processes (issue 17, "Agents as
processes"): packages as signed bytes, the TSO's signature check, and the co-simulation's
clearings against the in-process study (:func:`flexcore.region.study.run_region`) on the
same data, frame by frame."""
from __future__ import annotations

import copy
import io
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flexcore.exchange.points import PackageError
from flexcore.exchange.signing import SignatureError
from flexcore.exchange.wire import (
    package_from_bytes,
    package_from_text,
    package_to_bytes,
    package_to_text,
    public_key_pem,
)
from flexcore.region.dsos import FrameInjections
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region
from tests.region_grid import small_region, without_crypto
from tests.test_wire_memory import rezip, zip_members

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def region():
    return split_region(small_region(), source="small")


@pytest.fixture(scope="module")
def setup(region):
    return setup_region(region, region_bids(region, seed=1, share=(1.0, 3.0)))


# --------------------------------------------------------------------------- bytes
def test_package_bytes_round_trip_and_tampering(setup):
    pkg = setup.lv[0].published()
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    data = package_to_bytes(pkg, key)
    back = package_from_bytes(data, trusted=[key.public_key()], allow_full=True)
    for name in ("p_flex_mw", "vm_pu", "loading_percent", "vtdf", "ltdf"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pkg, name))
    assert back.columns == pkg.columns and back.vm_rows == pkg.vm_rows
    # base64 text for JSON messages
    text = package_to_text(pkg, key)
    assert package_from_text(text, trusted=[key.public_key()], allow_full=True).columns \
        == pkg.columns
    # signed by another key than the trusted one: refused, naming the source
    with pytest.raises(SignatureError, match="lv-x.*not trusted"):
        package_from_bytes(data, trusted=[other.public_key()], allow_full=True, source="lv-x")
    with pytest.raises(SignatureError, match="no trusted key"):
        package_from_bytes(data, trusted=[], allow_full=True)
    # format 1 only on request
    with pytest.raises(PackageError, match="version 1"):
        package_from_bytes(data, trusted=[key.public_key()])
    # one flipped byte anywhere in the arrays: a named error, never a package
    start = data.index(b"PK\x03\x04", data.index(b"arrays.npz"))  # inside arrays.npz
    for pos in (start + 200, len(data) // 2):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises((PackageError, SignatureError), match="from lv-x"):
            package_from_bytes(bytes(bad), trusted=[key.public_key()], allow_full=True,
                               source="bytes from lv-x")


def _rezip(data: bytes, change) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        comment = zf.comment
    return rezip(change(zip_members(data)), comment)


def test_package_bytes_refuse_a_consistent_forgery(setup):
    """An attacker who rewrites a number and re-zips (valid CRCs) meets the digest; one who
    also recomputes the digests meets the signature."""
    pkg = setup.lv[0].linear()    # the nominal limits (published() has the solver margin)
    key = Ed25519PrivateKey.generate()
    data = package_to_bytes(pkg, key)

    def manifest_edit(parts):
        parts["manifest.json"] = parts["manifest.json"].replace(b'"vm_max_pu": 1.1',
                                                                b'"vm_max_pu": 1.2')
        return parts

    forged = _rezip(data, manifest_edit)
    assert forged != data
    with pytest.raises(PackageError, match="digest mismatch"):
        package_from_bytes(forged, trusted=[key.public_key()], allow_full=True, source="s")
    extra = _rezip(data, lambda p: p | {"evil.pkl": b"x"})
    with pytest.raises(PackageError, match="expected exactly"):
        package_from_bytes(extra, trusted=[key.public_key()], allow_full=True)
    with pytest.raises(PackageError, match="not a readable"):
        package_from_bytes(b"not a zip", trusted=[key.public_key()])
    with pytest.raises(PackageError, match="base64"):
        package_from_text("%%%", trusted=[key.public_key()])


def test_tso_refuses_a_package_signed_with_the_wrong_key(setup):
    """The TSO agent reads each package with its DSO's public key only."""
    from agents.region_tso import RegionTSO

    d = setup.lv[0]
    key, impostor = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    tso = RegionTSO()
    tso.init("TSO-0", step_s=900)
    tso.create(1, "TSO", request_mw=[0.01], max_rounds=0)
    bids = {"ids": list(d.bids.ids), "volume_mw": d.bids.volume_mw.tolist(),
            "price_eur_per_mwh": d.bids.price_eur_per_mwh.tolist()}
    tso.create(1, "Desk", dsos=[{"name": d.name, "public_key": public_key_pem(key),
                                 "bids": bids}])
    msg = {"frame": 0, "round": 0, "package": package_to_text(d.package, impostor)}
    tso.step(0, {d.name: {"from_dso": {"RegionDSO-0.x": msg}}}, 900)
    rec = tso.get_data({"TSO": ["clearing", "setpoint[MW]"]})["TSO"]
    assert "setpoint[MW]" not in rec
    assert rec["clearing"]["status"] == "refused" and not rec["clearing"]["dispatched"]
    assert "not trusted" in rec["clearing"]["message"] and d.name in rec["clearing"]["message"]
    # the same package signed by the DSO's own key is cleared
    tso2 = RegionTSO()
    tso2.init("TSO-1", step_s=900)
    tso2.create(1, "TSO", request_mw=[0.01], max_rounds=0)
    tso2.create(1, "Desk", dsos=[{"name": d.name, "public_key": public_key_pem(key),
                                  "bids": bids}])
    msg["package"] = package_to_text(d.package, key)
    tso2.step(0, {d.name: {"from_dso": {"RegionDSO-0.x": msg}}}, 900)
    out = tso2.get_data({"TSO": ["setpoint[MW]"], d.name: ["to_dso"]})
    assert sum(out["TSO"]["setpoint[MW]"]["activation_mw"].values()) == pytest.approx(0.01)
    assert sum(out[d.name]["to_dso"]["activation_mw"]) == pytest.approx(0.01)


# --------------------------------------------------------------------------- co-simulation
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    hexport = f":{port:04X}"
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(ln.split()[1].endswith(hexport) and ln.split()[3] == "0A" for ln in lines):
            return True
    return False


def _injections(net, factors) -> FrameInjections:
    load = net.load
    f = np.asarray(factors, float)[:, None]
    none = np.zeros(0, np.int64)
    return FrameInjections(load.index.to_numpy(), load.bus.to_numpy(),
                           f * load.p_mw.to_numpy()[None], f * load.q_mvar.to_numpy()[None],
                           none, none, np.zeros((len(f), 0)), none, none,
                           np.zeros((len(f), 0)))


@pytest.mark.slow
def test_cosim_with_dso_processes_and_a_joined_dso_equals_the_study(tmp_path):
    """3 LV DSOs of a 4-area region (the fourth area takes no part; the MV DSO sees its
    measured draw): two in two ``cmd`` processes, one served by a separately started
    ``--remote`` process in its own folder and joined with mosaik's ``connect`` starter;
    the MV DSO in a third process. Two frames (base loads, then loads x 1.25): every
    frame's clearing equals the in-process study's on that frame's loads."""
    from scenarios.region import RegionConfig
    from scenarios.region_cosim import CosimOptions, run_region_cosim

    region = split_region(small_region(n_lv=4), source="small")
    bids = region_bids(region, seed=1, share=(1.0, 3.0),
                       areas=[a.name for a in region.areas[:3]])
    cfg = RegionConfig(grid="small", request_share=0.3, max_rounds=3, mip_rel_gap=1e-7,
                       time_limit_s=60.0)
    factors = (1.0, 1.25)
    inj = _injections(region.net, factors)
    port = _free_port()
    remote = tmp_path / "remote-dso"
    remote.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    server = subprocess.Popen([sys.executable, "-m", "agents.region_dso",
                               f"127.0.0.1:{port}", "--remote"], cwd=remote, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while not _listening(port):
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() - t0 < 30, "the remote DSO did not start listening"
            time.sleep(0.1)
        res = run_region_cosim(cfg, CosimOptions(
            frames=len(factors), processes=2, connect=((f"127.0.0.1:{port}", str(remote), 1),)),
            out=tmp_path / "run", region=region, bids=bids, injections=inj)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    # the joined DSO worked in its own folder; the processes each in theirs
    names = [a.name for a in region.areas[:3]]
    assert sorted(p.name for p in remote.iterdir()) == [names[2]]
    assert (tmp_path / "run" / "dso-0" / names[0] / "area.json").is_file()
    assert (tmp_path / "run" / "dso-1" / names[1] / "area.json").is_file()
    assert not (tmp_path / "run" / "dso-0" / names[1]).exists()
    assert (tmp_path / "run" / "frames.csv").is_file()
    total = sum(b.volume_mw.sum() for b in bids.values())
    assert len(res.frames) == 2
    rep = None
    for f, row in enumerate(res.frames):
        net = copy.deepcopy(region.net)
        inj.apply(net, f)
        # a frame starts from the one before (FramePolicy: the warm point)
        rep = run_region(setup_region(split_region(net, source="small"), bids, secret="c"),
                         0.3 * total, max_rounds=3, mip_rel_gap=1e-7, time_limit_s=60.0,
                         previous=rep)
        assert row["status"] == rep.status == "optimal"
        assert row["privacy"] == "exact"      # the default; the study here: format 1
        assert row["cost_eur_per_h"] == pytest.approx(rep.cost_eur_per_h, rel=1e-7)
        assert row["rounds"] == rep.rounds
        assert row["ac_converged"] and row["ac_violations"] == 0 and row["dso_violations"] == 0
        assert row["delivered_at_interface_mw"] == pytest.approx(
            rep.delivered_at_interface_mw, abs=1e-7)
        assert row["max_vm_err_pu"] == pytest.approx(rep.max_vm_err_pu, rel=1e-3, abs=1e-9)
        # every package of every round crossed as signed bytes and was checked
        assert row["packages_verified"] >= len(names) + 1
        per_area = {a["area"]: a for a in res.areas if a["frame"] == f}
        for a in rep.areas:
            assert per_area[a.name]["delivered_mw"] == pytest.approx(a.delivered_mw, abs=1e-7)
            assert per_area[a.name]["rounds"] == a.rounds
    # the frames differ (re-linearised at the frame's loads)
    assert res.frames[0]["cost_eur_per_h"] != pytest.approx(res.frames[1]["cost_eur_per_h"],
                                                            rel=1e-6)


def test_frame_injections_write_only_matching_rows(region, tmp_path):
    """A DSO's share holds its own elements only: the MV model's area loads have indices
    of LV loads (other buses) and are neither in its share nor written."""
    inj = _injections(region.net, (1.0, 2.0))
    mv = copy.deepcopy(region.mv_net)
    colliding = set(mv.load.index) & set(region.net.load.index) - {0}
    assert colliding   # the test would prove nothing without an index collision
    share = inj.subset(mv)
    assert share.load_index.tolist() == [0]            # the MV load only
    before = mv.load.p_mw.copy()
    FrameInjections.load(share.save(tmp_path / "mv.npz")).apply(mv, 1)
    assert mv.load.p_mw.at[0] == pytest.approx(2 * before.at[0])
    assert (mv.load.p_mw.drop(index=0) == before.drop(index=0)).all()
    lv = copy.deepcopy(region.areas[1].net)
    inj.subset(lv).apply(lv, 1)
    np.testing.assert_allclose(lv.load.p_mw, 2 * region.areas[1].net.load.p_mw)


def test_region_tso_and_the_bytes_format_load_no_grid_code():
    """The TSO agent of the region and the bytes format import no pandapower (the static
    contract is setup.cfg's tso-agent-no-grid)."""
    code = ("import sys\nimport agents.region_tso, flexcore.exchange.wire\n"
            "assert 'pandapower' not in sys.modules, 'pandapower loaded'\n"
            "assert not any(m.startswith(('flexcore.grid', 'flexcore.region', 'flexcore.dso'))"
            " for m in sys.modules), 'grid code loaded'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def _tso_words(tso_dir: Path) -> tuple[str, set[str]]:
    """Everything the TSO held: its files and every message it received or sent, with each
    package's bytes opened (manifest, array names, arrays' string contents)."""
    import base64
    import json

    parts = [str(p.relative_to(tso_dir)) for p in tso_dir.rglob("*")]
    parts += [p.read_text() for p in tso_dir.rglob("*.pub")]

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                parts.append(str(k))
                if k == "package" and isinstance(v, str):
                    with zipfile.ZipFile(io.BytesIO(base64.b64decode(v))) as z:
                        for info in z.infolist():
                            parts.append(info.filename)
                            blob = z.read(info)
                            if info.filename.endswith(".json"):
                                parts.append(blob.decode())
                            elif info.filename.endswith(".npz"):
                                with zipfile.ZipFile(io.BytesIO(blob)) as inner:
                                    parts.extend(inner.namelist())
                                parts.extend(str(a) for a in np.load(
                                    io.BytesIO(blob), allow_pickle=False).values()
                                    if a.dtype.kind in "US")
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            parts.append(str(x))

    lines = (tso_dir / "messages.jsonl").read_text().splitlines()
    for line in lines:
        walk(json.loads(line))
    text = without_crypto("\n".join(parts))
    return text, set(re.findall(r"[A-Za-z0-9:_\-@]+", text))


def test_the_tso_sees_public_ids_and_pseudonyms_only(tmp_path):
    """One frame of a 2-area region in one process (starter "python"), the TSO's messages
    logged: no area, bus, load or transformer name and no internal bid id in anything the
    TSO held; its desks are the DSOs' public ids and its bid ids their pseudonyms, and the
    cost is the study's (which uses ids too) and independent of the secret. At privacy
    "exact" (the default) every row the TSO received is a side of the DSO's private model
    (here 1 of 60 LV sides and one link, 6 of 42 MV sides), never all of them."""
    from flexcore.region.ids import identities
    from scenarios.region import RegionConfig
    from scenarios.region_cosim import CosimOptions, run_region_cosim

    region = split_region(small_region(n_lv=2), source="small")
    bids = region_bids(region, seed=1, share=(1.0, 3.0))
    cfg = RegionConfig(grid="small", request_share=0.3, max_rounds=1, mip_rel_gap=1e-7,
                       time_limit_s=60.0, seed=5)
    res = run_region_cosim(cfg, CosimOptions(frames=1, starter="python", tso_log=True),
                           out=tmp_path / "run", region=region, bids=bids, secret="s1")
    row = res.frames[0]
    assert row["status"] == "optimal" and row["ac_violations"] == 0
    text, words = _tso_words(tmp_path / "run" / "tso")
    net = region.net
    private = {a.name for a in region.areas} | set(net.bus.name) | set(net.load.name)
    private |= {b for t in bids.values() for b in t.ids}
    private |= {f"trafo:{t}" for t in net.trafo.index} | {f"{t}" for t in ("line", "trafo")}
    assert "package" in words                          # the log holds the messages
    assert not words & private, words & private
    assert not re.search(r"\blv\d+", text)
    ids = identities([a.name for a in region.areas] + ["mv"], seed=5, secret="s1")
    pub = {ids[n].public_id for n in bids}
    assert pub <= words and {ids[n].bid_id(b) for n, t in bids.items() for b in t.ids} <= words
    assert sorted(p.stem for p in (tmp_path / "run" / "tso" / "trusted").iterdir()) == \
        sorted(pub | {"mv"})
    # the runner's table keeps both names
    assert {(a["area"], a["dso"]) for a in res.areas if a["dso"] != "mv"} == \
        {(n, ids[n].public_id) for n in bids}
    total = sum(b.volume_mw.sum() for b in bids.values())
    rep = run_region(setup_region(region, bids, secret="other"), 0.3 * total, max_rounds=1,
                     mip_rel_gap=1e-7, time_limit_s=60.0)
    assert row["cost_eur_per_h"] == pytest.approx(rep.cost_eur_per_h, rel=1e-7)
    # privacy "exact" (the default): the TSO never held a linear model, only rows of the
    # DSOs' private models, and not all of them
    assert row["privacy"] == "exact"
    assert not words & {"vm_rows", "loading_rows", "vtdf", "ltdf", "slack_rows"}
    _published_rows_are_private_sides(tmp_path / "run" / "tso", setup_region(
        region, bids, seed=5, secret="s1"), 0.3 * total)


def _published_rows_are_private_sides(tso_dir: Path, setup, request_mw: float) -> None:
    """Every row of every round-0 package the TSO received (the sides each DSO published
    before any refinement, lazily added ones included) is a side of that DSO's private
    linear model (``setup``: the same DSOs in one process), and each DSO kept some sides
    back: a strict subset."""
    import json

    from flexcore.dso.privacy import normalise_sides
    from flexcore.exchange.wire import public_key_from_pem
    from flexcore.region.publish import lv_sides, mv_sides

    private = {d.name: lv_sides(d.published(), request_mw=request_mw) for d in setup.lv}
    private["mv"] = mv_sides(setup.mv.package, [setup.mv.slack_row[d.name] for d in setup.lv],
                             request_mw=request_mw)
    keys = {p.stem: public_key_from_pem(p.read_text()) for p in (tso_dir / "trusted").iterdir()}
    published: dict[str, set] = {n: set() for n in private}
    for line in (tso_dir / "messages.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["kind"] != "received":
            continue
        for desk, attrs in entry["messages"].items():
            for m in attrs["from_dso"].values():
                if m["round"] != 0 or "check" in m or not m.get("package"):
                    continue      # refined packages hold rows of later points
                pkg = package_from_text(m["package"], trusted=[keys[desk]])
                sides = private[desk]
                col = [sides.columns.index(c) for c in pkg.columns]
                for i in range(pkg.m):
                    a, rhs, _ = normalise_sides(sides.a[i], sides.c[i])
                    for row, r in zip(pkg.rows_a[i], pkg.rows_rhs[i]):
                        full = np.zeros(len(sides.columns))
                        full[col] = row
                        dev = np.abs(a - full).max(axis=1) / max(1.0, np.abs(full).max())
                        k = int(np.argmin(dev))
                        assert dev[k] < 1e-6 and rhs[k] == r, (desk, i, dev[k])
                        published[desk].add((i, k))
    for name, sides in private.items():
        total = sum(len(c) for c in sides.c)
        assert len(published[name]) < total, name
    assert sum(map(len, published.values())) > 0


def test_an_undispatched_frame_is_a_row_not_a_crash(tmp_path):
    """A request above every bid: the clearing fails in round 0 (no DSO check is sent);
    the frame's row says so (it once raised a KeyError in the tables)."""
    from scenarios.region import RegionConfig
    from scenarios.region_cosim import CosimOptions, run_region_cosim

    region = split_region(small_region(n_lv=2), source="small")
    cfg = RegionConfig(grid="small", request_share=1.5, max_rounds=1)
    res = run_region_cosim(cfg, CosimOptions(frames=1, starter="python"),
                           out=tmp_path / "run", region=region,
                           bids=region_bids(region, seed=1, share=(1.0, 3.0)))
    row = res.frames[0]
    assert row["status"] == "infeasible" and not row["dispatched"]
    assert row["dso_violations"] == 0 and np.isnan(row["max_vm_err_pu"])
    assert (tmp_path / "run" / "frames.csv").is_file()
