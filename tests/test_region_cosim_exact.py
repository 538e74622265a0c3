"""The region co-simulation at ``privacy = "exact"`` (agents.region_dso, agents.region_tso):
format-2 packages with lazily published rows, the MV DSO's slack-voltage changes sent to
each LV DSO and link requests back (DSO to DSO, never through the TSO), the TSO clearing
again until no DSO adds anything. Against the same co-simulation at ``"full"`` (format 1)
on the hand-built region over three frames; the message flow read off the TSO's log; the
frame policy's carry of the published sides across frames against the run without it."""
from __future__ import annotations

import base64
import csv
import io
import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from flexcore.region.dsos import FramePolicy
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region
from tests.region_grid import small_region
from tests.test_region_cosim import _injections

FACTORS = (1.0, 1.25, 0.8)
SHARE = 0.4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 4-area region over three frames (loads x 1, 1.25, 0.8; refinements, links), one
    process, at both privacy levels with the default frame policy, the TSO's messages
    logged; and at "exact" without the carry across frames (``"exact-nocarry"``)."""
    from scenarios.region import RegionConfig
    from scenarios.region_cosim import CosimOptions, run_region_cosim

    region = split_region(small_region(n_lv=4), source="small")
    bids = region_bids(region, seed=1, share=(1.0, 3.0))
    inj = _injections(region.net, FACTORS)
    out = {}
    for name, privacy, policy, frames in (
            ("full", "full", None, len(FACTORS)), ("exact", "exact", None, len(FACTORS)),
            ("exact-nocarry", "exact", replace(FramePolicy(), carry_frames=False), 2)):
        cfg = RegionConfig(grid="small", request_share=SHARE, max_rounds=3, mip_rel_gap=1e-7,
                           time_limit_s=60.0, privacy=privacy, seed=5)
        folder = tmp_path_factory.mktemp(name) / "run"
        out[name] = run_region_cosim(
            cfg, CosimOptions(frames=frames, starter="python", tso_log=True, policy=policy),
            out=folder, region=region, bids=bids, injections=inj, secret="s1")
    return region, bids, out


def _frames_csv(res) -> list[dict]:
    with open(res.folder / "frames.csv") as fh:
        return list(csv.DictReader(fh))


def test_carry_across_frames_clears_less_for_the_same_dispatch(runs):
    """With the default frame policy (the sides and links published at the end of a frame
    carried into the next) the later frames take fewer lazy clearings (read off
    ``frames.csv``; the run without: two frames) than without, for the same costs,
    rounds and deliveries; the first frame, which has nothing to carry, is the same."""
    assert FramePolicy().carry_frames
    carry, none = (_frames_csv(runs[2][n]) for n in ("exact", "exact-nocarry"))
    assert len(carry) == len(FACTORS) and len(none) == 2
    assert carry[0]["clearings"] == none[0]["clearings"]
    for c, n in zip(carry, none):
        assert float(c["cost_eur_per_h"]) == pytest.approx(float(n["cost_eur_per_h"]),
                                                           rel=1e-7)
        assert c["rounds"] == n["rounds"] and c["ac_violations"] == n["ac_violations"] == "0"
        assert int(c["rows_held"]) >= int(n["rows_held"])
    assert int(carry[1]["clearings"]) < int(none[1]["clearings"])


def test_exact_gives_the_format1_cost_and_dispatch_with_a_fraction_of_the_rows(runs):
    region, bids, res = runs
    full, exact = res["full"], res["exact"]
    assert len(full.frames) == len(exact.frames) == len(FACTORS)
    for f, e in zip(full.frames, exact.frames):
        assert f["status"] == e["status"] == "optimal"
        assert (f["privacy"], e["privacy"]) == ("full", "exact")
        assert e["cost_eur_per_h"] == pytest.approx(f["cost_eur_per_h"], rel=1e-7)
        assert e["rounds"] == f["rounds"]
        assert e["ac_violations"] == f["ac_violations"] == 0
        assert e["max_vm_err_pu"] == pytest.approx(f["max_vm_err_pu"], rel=1e-6, abs=1e-12)
        assert e["max_loading_err_percent"] == pytest.approx(f["max_loading_err_percent"],
                                                             rel=1e-6, abs=1e-10)
        assert e["delivered_at_interface_mw"] == pytest.approx(f["delivered_at_interface_mw"],
                                                               abs=1e-7)
        # the TSO holds a small part of the rows (full: every side of every row)
        assert 0 < e["rows_held"] < f["rows_held"] / 5
    # rows were added lazily (later frames start from the rows carried over)
    assert exact.frames[0]["clearings"] > full.frames[0]["clearings"]
    assert sum(e["clearings"] for e in exact.frames) > sum(f["clearings"] for f in full.frames)
    assert sum(e["links"] for e in exact.frames) > 0    # the link step is exercised
    # the same dispatch per area, and each LV DSO's slack change (told by the MV DSO) is
    # the TSO's format-1 prediction
    per = {(a["frame"], a["dso"]): a for a in full.areas}
    assert len(per) == len(exact.areas) == len(FACTORS) * (len(bids) + 1)
    for a in exact.areas:
        b = per[a["frame"], a["dso"]]
        assert a["delivered_mw"] == pytest.approx(b["delivered_mw"], abs=1e-7)
        assert a["rounds"] == b["rounds"] and a["point"] == b["point"]
        assert a["slack_dv_pu"] == pytest.approx(b["slack_dv_pu"], abs=1e-9)
    # the in-process study at "exact" on the first frame's loads: the same cost
    total = sum(b.volume_mw.sum() for b in bids.values())
    rep = run_region(setup_region(region, bids, secret="other"), SHARE * total,
                     max_rounds=3, mip_rel_gap=1e-7, time_limit_s=60.0, privacy="exact")
    assert exact.frames[0]["cost_eur_per_h"] == pytest.approx(rep.cost_eur_per_h, rel=1e-7)


def _entries(folder):
    """The TSO's log: per step, what it received ({(desk, attribute): [messages]}) or sent
    ({(entity, attribute): message})."""
    out = []
    for line in (folder / "tso" / "messages.jsonl").read_text().splitlines():
        entry = json.loads(line)
        msgs = {}
        for eid, attrs in entry["messages"].items():
            for attr, value in attrs.items():
                msgs[eid, attr] = list(value.values()) if entry["kind"] == "received" \
                    else value
        out.append((entry["kind"], msgs))
    return out


def test_exact_message_flow(runs):
    """Per round: a lazy clearing goes to every DSO without set-points; every DSO answers
    it (the MV DSO with its links' slack columns); the TSO clears again while one of them
    added something and dispatches the clearing that none answered with more. Nothing of
    the DSO-to-DSO messages (the slack changes, the link requests) reaches the TSO."""
    _, bids, res = runs
    entries = _entries(res["exact"].folder)
    desks = {eid for kind, msgs in entries for eid, attr in msgs if attr == "to_dso"}
    assert len(desks) == len(bids) + 1 and "mv" in desks
    keys = set()
    for kind, msgs in entries:
        for m in msgs.values():
            for x in (m if kind == "received" else [m]):
                keys |= set(x)
    assert not keys & {"sigma", "link", "slack_rows", "predicted_vm_pu", "slack_dv_pu"}
    lazy = answers = None
    dispatched, lazy_counts = [], {}
    for kind, msgs in entries:
        if kind == "received":
            for (eid, _), ms in msgs.items():
                for m in ms:
                    if m.get("lazy") is not None:
                        assert (m["frame"], m["round"], m["lazy"]) == lazy
                        assert ("slack_columns" in m) == (eid == "mv")
                        answers[eid] = m
            continue
        # the frame's last word to the DSOs (the round dispatched) is no clearing
        to_dso = [m for (eid, attr), m in msgs.items() if attr == "to_dso"
                  and not m.get("final")]
        if ("TSO", "setpoint[MW]") in msgs and not msgs["TSO", "setpoint[MW]"].get("final"):
            # a dispatch: the last lazy clearing, answered by all with nothing new
            m = msgs["TSO", "setpoint[MW]"]
            assert lazy[:2] == (m["frame"], m["round"])
            assert set(answers) == desks and not any(a["added"] for a in answers.values())
            assert len(to_dso) == len(desks) and not any("lazy" in x for x in to_dso)
            dispatched.append((m["frame"], m["round"]))
            lazy_counts[m["frame"], m["round"]] = lazy[2] + 1
            lazy = None
        elif to_dso:
            # a lazy clearing to every DSO; the one before it was answered by all, and one
            # of them added something
            assert len(to_dso) == len(desks)
            assert {(x["frame"], x["round"], x["lazy"]) for x in to_dso} == {
                (to_dso[0]["frame"], to_dso[0]["round"], to_dso[0]["lazy"])}
            m = to_dso[0]
            if m["lazy"] > 0:
                assert lazy == (m["frame"], m["round"], m["lazy"] - 1)
                assert set(answers) == desks and any(a["added"] for a in answers.values())
            else:
                assert lazy is None
            lazy, answers = (m["frame"], m["round"], m["lazy"]), {}
    assert dispatched == [(f["frame"], k) for f in res["exact"].frames
                          for k in range(f["rounds"] + 1)]
    assert max(lazy_counts.values()) > 1
    assert sum(lazy_counts.values()) == sum(f["clearings"] for f in res["exact"].frames)


def test_exact_packages_are_format2_only(runs):
    """Every package the TSO received at "exact" is format 2 (at "full", format 1)."""
    for privacy, version in (("exact", 2), ("full", 1)):
        seen = set()
        for kind, msgs in _entries(runs[2][privacy].folder):
            for m in (x for ms in msgs.values() for x in ms) if kind == "received" else ():
                if m.get("package"):
                    raw = base64.b64decode(m["package"])
                    with zipfile.ZipFile(io.BytesIO(raw)) as z:
                        manifest = json.loads(z.read("manifest.json"))
                    seen.add((manifest["version"], manifest.get("content", {}).get("privacy")))
        assert {v for v, _ in seen} == {version}, seen
        if version == 2:
            assert seen == {(2, "exact")}


def test_exact_is_refused_a_format1_package():
    """A TSO at "exact" refuses a format-1 package (the frame is refused, not cleared)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agents.region_tso import RegionTSO
    from flexcore.exchange.wire import package_to_text, public_key_pem

    region = split_region(small_region(n_lv=2), source="small")
    setup = setup_region(region, region_bids(region, seed=1, share=(1.0, 3.0)),
                         coupled=False)
    d = setup.lv[0]
    key = Ed25519PrivateKey.generate()
    tso = RegionTSO()
    tso.init("TSO-0", step_s=900)
    tso.create(1, "TSO", request_mw=[0.01], max_rounds=0, privacy="exact")
    tso.create(1, "Desk", dsos=[{"name": d.name, "public_key": public_key_pem(key), "bids": {
        "ids": list(d.bids.ids), "volume_mw": d.bids.volume_mw.tolist(),
        "price_eur_per_mwh": d.bids.price_eur_per_mwh.tolist()}}])
    msg = {"frame": 0, "round": 0, "package": package_to_text(d.package, key)}
    tso.step(0, {d.name: {"from_dso": {"RegionDSO-0.x": msg}}}, 900)
    rec = tso.get_data({"TSO": ["clearing", "setpoint[MW]"]})["TSO"]
    assert "setpoint[MW]" not in rec and rec["clearing"]["status"] == "refused"
    assert "version 1" in rec["clearing"]["message"]
    assert np.isnan(rec["clearing"]["cost_eur_per_h"])
