"""Privacy of the region's coupled clearing (flexcore.region.publish, flexcore.region.ids,
flexcore.region.audit.audit_published) on a hand-built region with two MV feeders: the
format-2 clearing with lazily published rows and links reaches the format-1 optimum, the
real attacker reads the nesting only off the published links (scored against pandapower's
graph of the whole region), and the DSOs' ids, pseudonyms and salts are private but do not
change the clearing."""
from __future__ import annotations

import re
import zipfile
from dataclasses import replace

import numpy as np
import pandapower as pp
import pytest

from flexcore.exchange.hardened import HardenedPackage
from flexcore.market.multi import SLACK_COLUMN
from flexcore.region.audit import attack_links, audit_published
from flexcore.region.dsos import SignedExchange
from flexcore.region.ids import identities
from flexcore.region.publish import slack_column_id
from flexcore.region.split import split_region
from flexcore.region.study import region_bids, run_region, setup_region
from tests.region_grid import true_nesting, without_crypto

GAP = 1e-7


def two_feeders(n: int = 3) -> pp.pandapowerNet:
    """Two 20 kV feeders (A, B) of ``n`` buses from one ext_grid; an MV/LV transformer at
    every MV bus but the source, each feeding a 0.4 kV feeder of 5 buses, 20 kW per bus."""
    net = pp.create_empty_network(name="two feeders")
    src = pp.create_bus(net, 20.0, name="src")
    pp.create_ext_grid(net, src, vm_pu=1.045)
    for f in "AB":
        prev = src
        for k in range(n):
            b = pp.create_bus(net, 20.0, name=f"{f}{k}")
            pp.create_line(net, prev, b, 3.0, "NA2XS2Y 1x95 RM/25 12/20 kV")
            lv = [pp.create_bus(net, 0.4, name=f"{f}{k}-lv{i}") for i in range(5)]
            pp.create_transformer(net, b, lv[0], "0.25 MVA 20/0.4 kV")
            for x, y in zip(lv[:-1], lv[1:]):
                pp.create_line(net, x, y, 0.1, "NAYY 4x150 SE")
            for i, y in enumerate(lv[1:]):
                pp.create_load(net, y, p_mw=0.02, q_mvar=0.005, name=f"load-{f}{k}-{i}")
            prev = b
    return net


@pytest.fixture(scope="module")
def region():
    return split_region(two_feeders(), source="two feeders")


@pytest.fixture(scope="module")
def bids(region):
    """Large bids on feeder A (its LV rows and MV voltages bind), small ones on B."""
    out = region_bids(region, seed=3, share=(2.5, 3.0))
    for a in region.areas:
        if a.net.bus.name.str.startswith("B").any():
            b = out[a.name]
            out[a.name] = replace(b, volume_mw=np.round(0.05 * b.volume_mw, 6))
    return out


@pytest.fixture(scope="module")
def setup(region, bids):
    return setup_region(region, bids, seed=7, secret="alpha")


@pytest.fixture(scope="module")
def runs(setup, bids):
    """Both privacy levels on the same DSOs (no refinement: the DSOs are not changed)."""
    total = sum(b.volume_mw.sum() for b in bids.values())
    return {priv: (setup, run_region(setup, 0.4 * total, privacy=priv, mip_rel_gap=GAP,
                                     max_rounds=0)) for priv in ("full", "exact")}


def test_exact_coupled_clearing_reaches_the_format1_optimum(runs):
    (_, full), (_, exact) = runs["full"], runs["exact"]
    assert full.status == exact.status == "optimal"
    assert exact.cost_eur_per_h == pytest.approx(full.cost_eur_per_h, rel=1e-7)
    # the same dispatch, within the solver's tolerance
    for a, b in zip(full.areas, exact.areas):
        assert a.delivered_mw == pytest.approx(b.delivered_mw, abs=1e-6)
    pub = exact.published.summary()
    assert pub["clearings"] > 1                      # rows were added lazily
    assert 0 < pub["lv_sides_published"] < pub["lv_sides_total"] / 10
    # only feeder A's areas need their link; B's rows never bind
    assert 0 < pub["mv_links_published"] < pub["areas"]
    region = runs["exact"][0].region
    for k in exact.published.mv.linked:
        name = runs["exact"][0].area_names[runs["exact"][0].lv[k].name]
        assert region.area(name).net.bus.name.str.startswith("A").any()
    assert isinstance(exact.published.mv_package, HardenedPackage)
    assert all(isinstance(p, HardenedPackage) for p in exact.published.packages)
    # the DSOs' private predictions (format 2 carries none) are the TSO's format-1 ones:
    # the same errors against the region's AC power flow
    assert exact.max_vm_err_pu == pytest.approx(full.max_vm_err_pu, abs=1e-9)
    assert exact.max_loading_err_percent == pytest.approx(full.max_loading_err_percent,
                                                          abs=1e-7)


def test_the_attacker_reads_only_the_linked_areas_nesting(runs):
    setup, exact = runs["exact"]
    truth = true_nesting(setup, min_size=2)
    assert len(truth) == 4                   # {A0, A1, A2}, {A1, A2} and the same on B
    res = audit_published(setup, exact.published, order_permutations=5)
    slack = {d.name: slack_column_id(d.name) for d in setup.lv}
    guessed = attack_links(exact.published.mv_package, slack)
    linked = {setup.lv[k].name for k in exact.published.mv.linked}
    # the groups on the linked areas' paths come back, exactly those
    assert truth & guessed == {t for t in truth if t & linked}
    assert res.nesting.count == len(truth & guessed) == res.bound == 2
    # every link published (what the format-1 coupled clearing gives this attack): all
    assert res.nesting_all_links.count == res.nesting_all_links.total == 4
    assert res.mv_rows["downstream_sets"].count <= \
        res.mv_rows.package["bounds"]["distinct_rows_published"]


def test_ids_and_salts_are_private_and_do_not_change_the_clearing(region, bids, setup):
    total = sum(b.volume_mw.sum() for b in bids.values())
    other = setup_region(region, bids, seed=7, secret="beta")
    reps = [run_region(s, 0.3 * total, privacy="full", mip_rel_gap=1e-3, max_rounds=0)
            for s in (setup, setup, other)]
    # same seed and secret: the same ids, pseudonyms and salts (the names are derived)
    again = identities(list(bids) + ["mv"], seed=7, secret="alpha")
    assert [again[n].public_id for n in bids] == [d.name for d in setup.lv]
    assert [again[n].pseudonymous(b).ids for n, b in bids.items()] == \
        [d.bids.ids for d in setup.lv]
    assert setup.lv[0].lin.keymap.salt == again[next(iter(bids))].salt
    # another secret: other ids, pseudonyms and row keys (salt)
    assert not {d.name for d in setup.lv} & {d.name for d in other.lv}
    assert not set(setup.lv[0].bids.ids) & set(other.lv[0].bids.ids)
    assert not set(setup.lv[0].package.vm_rows) & set(other.lv[0].package.vm_rows)
    assert not set(setup.mv.package.vm_rows) & set(other.mv.package.vm_rows)
    assert all(re.fullmatch(r"d[0-9a-f]{12}", d.name) for d in other.lv)
    # a seed alone does not give the ids: the secret is needed
    assert identities(list(bids), seed=7, secret="gamma")[next(iter(bids))].public_id \
        != setup.lv[0].name
    # the clearing: identical again and with the other secret (rows are ordered by
    # content, not by salted key), here at a 1e-3 gap
    for rep in reps[1:]:
        assert rep.cost_eur_per_h == reps[0].cost_eur_per_h
        assert [a.delivered_mw for a in rep.areas] == [a.delivered_mw for a in reps[0].areas]
        assert [a.name for a in rep.areas] == [a.name for a in reps[0].areas]
    # format 2: every DSO shuffles from its own secret; the TSO orders by content
    ex = [run_region(s, 0.3 * total, privacy="exact", mip_rel_gap=1e-3, max_rounds=0)
          for s in (setup, other)]
    assert ex[0].cost_eur_per_h == ex[1].cost_eur_per_h
    assert [a.delivered_mw for a in ex[0].areas] == [a.delivered_mw for a in ex[1].areas]
    p0, p1 = ex[0].published.packages[0], ex[1].published.packages[0]
    assert set(p0.columns) & set(p1.columns) == {SLACK_COLUMN}
    assert p0.row_counts == p1.row_counts


def test_no_private_name_in_what_crosses_to_the_tso(region, bids, setup, tmp_path):
    total = sum(b.volume_mw.sum() for b in bids.values())
    folder = tmp_path / "packages"
    ex = SignedExchange(folder, [d.name for d in setup.lv] + ["mv"])
    rep = run_region(setup, 0.3 * total, privacy="exact", exchange=ex, max_rounds=0,
                     mip_rel_gap=1e-6)
    assert rep.status == "optimal" and ex.shipped > len(setup.lv) + 1
    assert sorted(p.name for p in folder.iterdir()) == sorted([d.name for d in setup.lv]
                                                              + ["mv"])
    private = {a.name for a in region.areas} | set(region.net.bus.name) | \
        set(region.net.load.name) | {f"trafo:{t}" for t in region.net.trafo.index}
    private |= {b for d in bids.values() for b in d.ids}
    parts = [str(p.relative_to(folder)) for p in folder.rglob("*")]
    for p in folder.rglob("*.json"):
        parts.append(p.read_text())
    for p in folder.rglob("*.npz"):
        with zipfile.ZipFile(p) as z:      # array names; the arrays are float64 only
            parts += z.namelist()
    text = without_crypto("\n".join(parts))
    words = set(re.findall(r"[A-Za-z0-9:_\-@]+", text))
    assert not words & private
    assert not re.search(r"\blv\d+\b", text)


def test_clear_region_takes_lp_screened_format2_packages(setup, bids):
    """The region clearing over format-2 packages of `harden` (LP-screened, shuffled rows
    and columns; uncoupled) gives the format-1 optimum, also against the m^N enumeration."""
    from flexcore.dso.privacy import harden
    from flexcore.market.multi import AreaPackage, clear_region, enumerate_regions

    total = sum(b.volume_mw.sum() for b in bids.values())
    one = [AreaPackage(d.name, d.package, d.bids) for d in setup.lv]
    two = [AreaPackage(d.name, harden(d.package, lower_mw=d.bids.lower_mw,
                                      upper_mw=d.bids.upper_mw,
                                      rng=np.random.default_rng(k))[0], d.bids)
           for k, d in enumerate(setup.lv)]
    for share in (0.2, 0.4):
        r1 = clear_region(one, share * total, mip_rel_gap=GAP)
        r2 = clear_region(two, share * total, mip_rel_gap=GAP)
        assert r1.status == r2.status
        assert r2.cost_eur_per_h == pytest.approx(r1.cost_eur_per_h, rel=1e-7)
        assert not r2.predicted_vm_pu          # format 2: the TSO predicts nothing
    best, count = enumerate_regions(two[:3], 0.1 * total)
    assert count == 27 and best is not None
    assert clear_region(two[:3], 0.1 * total, mip_rel_gap=GAP).cost_eur_per_h == \
        pytest.approx(best.cost_eur_per_h, rel=1e-7)


def test_region_config_privacy_and_secret_file(tmp_path):
    from pathlib import Path

    from scenarios.config import ConfigError
    from scenarios.region import load_region_config

    toml = tmp_path / "r.toml"
    toml.write_text("[region]\n")
    assert load_region_config(toml).privacy == "exact"         # the default
    (tmp_path / "dso.secret").write_bytes(b"k" * 32)
    toml.write_text('[region]\nprivacy = "full"\ndso_secret_file = "dso.secret"\n')
    cfg = load_region_config(toml)
    assert cfg.privacy == "full" and Path(cfg.dso_secret_file).read_bytes() == b"k" * 32
    toml.write_text('[region]\nprivacy = "none"\n')
    with pytest.raises(ConfigError, match=r"r\.toml: \[region\] privacy"):
        load_region_config(toml)
    toml.write_text('[region]\ndso_secret_file = "missing"\n')
    with pytest.raises(ConfigError, match="dso_secret_file 'missing'"):
        load_region_config(toml)
