"""The region co-simulation's privacy audit (``audit_published.json``,
:func:`flexcore.region.audit.audit_received`): the attack on the MV packages the TSO received,
read back from its log as signed bytes. Oracles: the study's audit
(:func:`flexcore.region.audit.audit_published`) of an in-process publication with the same
links, and the nesting read off pandapower's graph of the whole region."""
from __future__ import annotations

import json

import pytest

from flexcore.region.audit import attack_links, audit_published
from flexcore.region.publish import LazyPublication, slack_column_id
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, setup_region
from tests.region_grid import small_region, true_nesting
from tests.test_region_cosim import _injections

FACTORS = (1.0, 0.8)
SHARE = 0.4
SEED, SECRET = 5, "s1"


def _run(tmp_path_factory, privacy: str, frames: int, audit: bool = True):
    from scenarios.region import RegionConfig
    from scenarios.region_cosim import CosimOptions, run_region_cosim

    region = split_region(small_region(n_lv=4), source="small")
    bids = region_bids(region, seed=1, share=(1.0, 3.0))
    cfg = RegionConfig(grid="small", request_share=SHARE, max_rounds=3, mip_rel_gap=1e-7,
                       time_limit_s=60.0, privacy=privacy, seed=SEED, audit=audit)
    res = run_region_cosim(cfg, CosimOptions(frames=frames, starter="python"),
                           out=tmp_path_factory.mktemp(privacy) / "run", region=region,
                           bids=bids, injections=_injections(region.net, FACTORS[:frames]),
                           secret=SECRET)
    return region, bids, res


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    return _run(tmp_path_factory, "exact", len(FACTORS))


def test_cosim_audit_matches_the_studys_audit_of_the_same_links(exact):
    region, bids, res = exact
    doc = json.loads((res.folder / "audit_published.json").read_text())
    assert doc["privacy"] == "exact" and doc["areas"] == len(bids)
    # every MV package the TSO received: at least one per frame and clearing round
    assert doc["mv_packages_received"] >= sum(f["rounds"] + 1 for f in res.frames)
    assert [f["frame"] for f in doc["frames"]] == list(range(len(FACTORS)))
    assert doc["links"] == len(doc["linked"]) > 0
    assert doc["links"] >= max(f["links"] for f in res.frames)
    # the study (same secret and seed: the same public ids), its MV DSO publishing exactly
    # the links the TSO received, attacked and scored by the study's audit
    setup = setup_region(region, bids, secret=SECRET, seed=SEED)
    ids = [d.name for d in setup.lv]
    assert set(doc["linked"]) <= set(ids)
    total = sum(b.volume_mw.sum() for b in bids.values())
    pub = LazyPublication.start(setup, SHARE * total, SEED)
    for a in doc["linked"]:
        pub.mvp.link(ids.index(a))
    assert pub.mvp.republish()
    study = audit_published(setup, pub)
    for key, score in (("nesting", study.nesting),
                       ("nesting_all_links", study.nesting_all_links)):
        assert (doc[key]["count"], doc[key]["total"]) == (score.count, score.total), key
    assert doc["nesting_on_linked_paths"] == study.bound
    guessed = attack_links(pub.mv_package, {a: slack_column_id(a) for a in ids})
    assert {frozenset(g) for g in doc["groups_guessed"]} == guessed
    # independent oracle: the nesting from pandapower's graph of the whole region (a chain
    # of 4 areas: 3 groups of >= 2); the attack recovers exactly the groups on the linked
    # areas' paths, except the group of all areas (every link row is flat across it: no step)
    graph = true_nesting(setup, min_size=2)
    every = frozenset(ids)
    assert doc["nesting"]["total"] == len(graph) == 3 and every in graph
    linked = set(doc["linked"])
    assert graph & guessed == {t for t in graph if t & linked} - {every}
    assert doc["nesting"]["count"] == len(graph & guessed) > 0
    assert doc["nesting_on_linked_paths"] == sum(1 for t in graph if t & linked)
    assert doc["nesting_all_links"]["count"] == len(graph - {every})
    # the MV limit rows were audited (format 2, the last package's limit rows)
    assert doc["mv_limit_rows"]["scores"]


@pytest.mark.slow
def test_cosim_audit_at_full_and_switched_off(tmp_path_factory):
    """At "full" the TSO holds the MV DSO's format-1 package and its areas' slack rows: the
    nesting comes back in full. ``audit = false``: no audit, no TSO log."""
    region, bids, res = _run(tmp_path_factory, "full", 1)
    doc = json.loads((res.folder / "audit_published.json").read_text())
    setup = setup_region(region, bids, secret=SECRET, seed=SEED)
    graph = true_nesting(setup, min_size=2)
    assert doc["privacy"] == "full" and doc["mv_packages_received"] >= res.frames[0]["rounds"]
    assert doc["nesting"]["count"] == doc["nesting"]["total"] == len(graph) == 3
    _, _, off = _run(tmp_path_factory, "exact", 1, audit=False)
    assert not (off.folder / "audit_published.json").exists()
    assert not (off.folder / "tso" / "messages.jsonl").exists()
