"""Privacy audit of a region's packages: the MV DSO's package over area injections and an
LV DSO's package, attacked with :func:`flexcore.dso.audit.audit` and scored against the
private models (the MV model with the LV areas as loads, the LV area's model).

What the MV package can leak is how the LV areas nest on the MV feeders: its loading rows
are the MV lines and transformers, its columns the areas, so ``downstream_sets`` recovers
which areas share an MV feeder branch, ``own_bus`` which voltage row is an area's own MV
bus. The region's clearing adds one leak of its own: the coupling metadata
(``AreaPackage.mv_slack_row``) names, for every area, the MV voltage row of its slack bus
(:func:`coupling_own_bus`), i.e. the own-bus answer, for free.

The **hardened** MV package (format 2, :func:`flexcore.dso.privacy.harden`, the
``privacy="exact"`` form) is audited too, for the before/after figures. The coupling needs
more than its limit rows: the MV package's prediction of each area's slack voltage. Those
**coupling rows** alone (the MV package restricted to the areas' slack-bus voltage rows)
are audited as ``mv_coupling``: their VTDF block ``S_ab = dV_mv(a) / dP_b`` is the shared
path resistance of areas a and b to the source, so the ``subtrees`` attack reads the feeder
nesting off it.

What the coupled clearing at ``privacy = "exact"`` actually published (format 2, lazily
published rows and links, :mod:`flexcore.region.publish`) is attacked by
:func:`audit_published`: :func:`attack_links` reads the nested groups off the published
links, :func:`flexcore.dso.audit.audit` the MV limit rows.

:func:`write_region_audit` writes ``audit_mv.json`` (format 1 and hardened) and
``audit_lv.json`` (one LV area) into a run folder.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from flexcore.dso.audit import AuditReport, Score, attack_subtrees, audit, true_downstream_sets
from flexcore.dso.privacy import harden
from flexcore.exchange.hardened import HardenedPackage

#: salts an attacker who knows the region's naming scheme tries first: the MV DSO's and
#: every area's name (:func:`flexcore.region.dsos.make_lv_dso` / ``make_mv_dso``)
MV_SALT = "mv"


def coupling_own_bus(setup: Any) -> Score:
    """Own MV bus of each area from the coupling metadata alone: the TSO is told the MV
    voltage row of every area's slack; scored against the MV model (row key -> bus)."""
    mv = setup.mv
    km = mv.lin.keymap
    hit = sum(int(km.vm_pu[mv.slack_row[d.name]] == d.area.mv_bus) for d in setup.lv)
    return Score("coupling_own_bus", "mv_slack_row metadata -> area's MV bus row", hit,
                 len(setup.lv), "published with every coupled LV package")


def coupling_nesting(mv: Any, coupling_pkg: Any) -> Score:
    """The feeder nesting from the coupling rows alone: single-linkage clusters of the areas
    on the slack rows' shared-path block, scored against the MV package's true multi-area
    downstream sets (the MV lines' areas behind them)."""
    true = {t for t in true_downstream_sets(mv.lin.net, mv.lin.keymap, mv.package)
            if t is not None and len(t) >= 2}
    guess = attack_subtrees(coupling_pkg)
    return Score("coupling_nesting", "slack-row VTDF block -> areas sharing an MV branch",
                 len(true & guess), len(true), f"{len(guess)} clusters",
                 applicable=bool(true))


@dataclass(frozen=True)
class RegionAudit:
    """The MV package's audit (format 1 as cleared, and hardened), one LV area's."""

    mv: AuditReport
    mv_hardened: AuditReport | None
    mv_coupling: AuditReport
    nesting: Score
    coupling: Score
    lv_name: str
    lv: AuditReport

    def as_dict(self) -> dict[str, Any]:
        return {"mv": self.mv.as_dict(), "coupling_own_bus": self.coupling.as_dict(),
                "mv_hardened": None if self.mv_hardened is None else
                self.mv_hardened.as_dict(), "mv_coupling": self.mv_coupling.as_dict(),
                "coupling_nesting": self.nesting.as_dict(),
                "lv_area": self.lv_name, "lv": self.lv.as_dict()}

    def summary(self) -> dict[str, Any]:
        """Headline fractions (recovered / total) per package."""
        keys = ("downstream_sets", "transformer_areas", "tree_links", "edges", "own_bus",
                "subtrees", "colocated", "id_leaks", "feeder_order", "salt_rows")

        def pick(rep: AuditReport | None) -> dict[str, Any]:
            if rep is None:
                return {}
            out = {}
            for s in rep.scores:
                if s.key in keys:
                    out[s.key] = f"{s.count}/{s.total}" if s.applicable else "n/a"
            return out

        return {"mv": pick(self.mv), "mv_hardened": pick(self.mv_hardened),
                "mv_coupling": pick(self.mv_coupling),
                "coupling_nesting": f"{self.nesting.count}/{self.nesting.total}",
                "coupling_own_bus": f"{self.coupling.count}/{self.coupling.total}",
                "lv": pick(self.lv), "lv_area": self.lv_name}


def audit_region(setup: Any, *, lv_area: str | None = None, hardened: bool = True,
                 seed: int = 0, order_permutations: int = 50) -> RegionAudit:
    """Audit ``setup``'s MV package (needs ``setup.mv``) and one LV package (default: the
    area with most bids). Salt guesses: the region's own naming (``"mv"``, area names)."""
    if setup.mv is None:
        raise ValueError("the region setup has no MV package (coupled = false)")
    mv = setup.mv
    # the old naming scheme ("mv", "lv<trafo>") and the public ids: the salts are private
    guesses = (MV_SALT,) + tuple(getattr(setup, "area_names", {}).values()) + tuple(
        d.name for d in setup.lv)
    rep_mv = audit(mv.package, net=mv.lin.net, keymap=mv.lin.keymap, salt_guesses=guesses,
                   order_permutations=order_permutations)
    rep_h = None
    if hardened:
        box = mv.bids.subset(mv.package.columns)
        hard, key = harden(mv.package, lower_mw=box.lower_mw, upper_mw=box.upper_mw,
                           rng=np.random.default_rng(seed))
        rep_h = audit(hard, net=mv.lin.net, keymap=mv.lin.keymap, hardening_key=key,
                      order_permutations=order_permutations)
    slack = set(mv.slack_row.values())
    pkg = mv.package
    coupling_pkg = pkg.select_rows([k in slack for k in pkg.vm_rows],
                                   np.zeros(len(pkg.loading_rows), bool))
    rep_c = audit(coupling_pkg, net=mv.lin.net, keymap=mv.lin.keymap, salt_guesses=guesses,
                  order_permutations=order_permutations)
    d = max(setup.lv, key=lambda d: len(d.bids)) if lv_area is None else \
        next(d for d in setup.lv if d.name == lv_area)
    rep_lv = audit(d.package, net=d.lin.net, keymap=d.lin.keymap, salt_guesses=guesses,
                   order_permutations=order_permutations)
    return RegionAudit(rep_mv, rep_h, rep_c, coupling_nesting(mv, coupling_pkg),
                       coupling_own_bus(setup), d.name, rep_lv)


def write_region_audit(setup: Any, folder: str | Path, **kw: Any) -> RegionAudit:
    """:func:`audit_region` into ``folder/audit_mv.json`` and ``folder/audit_lv.json``."""
    res = audit_region(setup, **kw)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc = res.as_dict()
    (folder / "audit_mv.json").write_text(json.dumps(
        {"mv": doc["mv"], "coupling_own_bus": doc["coupling_own_bus"],
         "mv_hardened": doc["mv_hardened"], "mv_coupling": doc["mv_coupling"],
         "coupling_nesting": doc["coupling_nesting"], "summary": res.summary()}, indent=1))
    (folder / "audit_lv.json").write_text(json.dumps(
        {"lv_area": res.lv_name, "lv": doc["lv"]}, indent=1))
    return res


# --------------------------------------------------------------------------- coupled, format 2
#: entries of a link row closer than this (relative to its largest) are one shared path:
#: areas branching off at one node differ only by second-order terms (~1e-5 relative),
#: nodes by an MV line segment's resistance (percents of the path)
LINK_TOL = 1e-3


def attack_links(package: HardenedPackage, slack_columns: Mapping[str, str]
                 ) -> set[frozenset[str]]:
    """The nesting an attacker reads off the links of a published format-2 MV package.

    ``slack_columns``: area id -> its slack column (what the TSO must know to chain the
    packages). Every published row with an entry in area ``a``'s slack column is ``(t,
    -1)`` up to scale on (injections, sigma_a): ``t_b = dV_a / dP_b``, the resistance the
    paths of ``a`` and ``b`` share. Sorted from the largest, ``t`` falls in steps, one per
    node of ``a``'s path where other areas branch off; the areas above a step (a drop of
    more than :data:`LINK_TOL` of the largest entry) share the path up to that node: a
    nested group (guessed when it has two or more areas). Returns the guessed groups (area
    ids)."""
    sig = set(slack_columns.values())
    inj = [c for c in package.columns if c not in sig]
    idx = np.array([package.columns.index(c) for c in inj], np.int64)
    out: set[frozenset[str]] = set()
    for col in slack_columns.values():
        if col not in package.columns:
            continue
        k = package.columns.index(col)
        for a in package.rows_a:
            for row in a[np.abs(a[:, k]) > 0]:
                t = row[idx] / -row[k]
                scale = float(np.abs(t).max())
                if scale <= 0.0:
                    continue
                order = np.argsort(-t / scale, kind="stable")
                ts = t[order] / scale
                steps = np.flatnonzero(ts[:-1] - ts[1:] > LINK_TOL)
                for cut in steps[ts[steps] > LINK_TOL]:
                    if cut >= 1:
                        out.add(frozenset(inj[j] for j in order[:cut + 1]))
    return out


def true_nesting(mv: Any) -> set[frozenset[str]]:
    """The MV DSO's truth: per MV branch (a bridge), the areas behind it, as sets of two or
    more area ids (the MV package's columns)."""
    cols = mv.package.columns
    return {frozenset(cols[j] for j in t)
            for t in true_downstream_sets(mv.lin.net, mv.lin.keymap, mv.package)
            if t is not None and len(t) >= 2}


def limit_rows_only(package: HardenedPackage, slack_columns: Mapping[str, str]
                    ) -> HardenedPackage:
    """``package`` without the slack columns and the link rows (the MV limit rows only)."""
    sig = set(slack_columns.values())
    keep = [j for j, c in enumerate(package.columns) if c not in sig]
    drop = [j for j, c in enumerate(package.columns) if c in sig]
    rows = [np.all(a[:, drop] == 0.0, axis=1) for a in package.rows_a]
    return replace(package, columns=tuple(package.columns[j] for j in keep),
                   p_flex_mw=package.p_flex_mw[:, keep],
                   rows_a=tuple(a[r][:, keep] for a, r in zip(package.rows_a, rows)),
                   rows_rhs=tuple(rhs[r] for rhs, r in zip(package.rows_rhs, rows)),
                   request_mw=None)


@dataclass(frozen=True)
class PublishedAudit:
    """What the coupled clearing at ``privacy = "exact"`` published, attacked: the nested
    groups of areas the links give back (``nesting``) against every link published
    (``nesting_all_links``, what a coupled format-1 clearing reveals to the same attack),
    their bound (true groups containing a linked area), and the MV limit rows' audit."""

    nesting: Score
    nesting_all_links: Score
    bound: int
    links: int
    areas: int
    mv_rows: AuditReport
    published: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"nesting": self.nesting.as_dict(),
                "nesting_all_links": self.nesting_all_links.as_dict(),
                "nesting_on_linked_paths": self.bound, "links": self.links,
                "areas": self.areas, "mv_limit_rows": self.mv_rows.as_dict(),
                "published": self.published}


def audit_published(setup: Any, published: Any, *, order_permutations: int = 50
                    ) -> PublishedAudit:
    """Audit the MV package the coupled clearing last cleared at ``privacy = "exact"``
    (``published``: the report's :class:`~flexcore.region.study.LazyPublication`) with
    the real attacks (:func:`attack_links`, :func:`flexcore.dso.audit.audit`), scored
    against the MV DSO's private model."""
    from flexcore.region.publish import slack_column_id

    mv = setup.mv
    if mv is None or published is None or published.mv is None:
        raise ValueError("no coupled clearing at privacy 'exact' to audit")
    ids = [d.name for d in setup.lv]
    slack = {a: slack_column_id(a) for a in ids}
    truth = true_nesting(mv)
    sides = published.mv
    got = attack_links(published.mv_package, slack)
    every = copy.deepcopy(sides)
    for k in range(len(ids)):
        every.add_link(k)
    got_all = attack_links(every.publish(rng=np.random.default_rng(0)), slack)
    linked = {ids[k] for k in sides.linked}
    bound = sum(1 for t in truth if t & linked)

    def score(key: str, guess: set[frozenset[str]], note: str) -> Score:
        return Score(key, "link rows -> areas sharing an MV branch", len(truth & guess),
                     len(truth), f"{len(guess)} groups guessed; {note}",
                     applicable=bool(truth))

    rows = limit_rows_only(published.mv_package, slack)
    assert sides.key is not None
    rep = audit(rows, net=mv.lin.net, keymap=mv.lin.keymap, hardening_key=sides.key,
                order_permutations=order_permutations)
    return PublishedAudit(score("nesting", got, f"{len(linked)} links published"),
                          score("nesting_all_links", got_all, "every link published"),
                          bound, len(linked), len(ids), rep, published.summary())


def write_published_audit(setup: Any, published: Any, folder: str | Path, **kw: Any
                          ) -> PublishedAudit:
    """:func:`audit_published` into ``folder/audit_mv_published.json``."""
    res = audit_published(setup, published, **kw)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit_mv_published.json").write_text(json.dumps(res.as_dict(), indent=1))
    return res


# --------------------------------------------------------------------------- co-simulation
@dataclass(frozen=True)
class ReceivedAudit:
    """The attack on every MV package the TSO received in a region co-simulation (read
    back from its log as signed bytes, verified with the MV DSO's public key), scored
    against the MV DSO's model: at ``privacy = "exact"`` the nested groups the links give
    back (:func:`attack_links`, per frame and over the whole run) and the last package's
    limit rows (:func:`flexcore.dso.audit.audit`); at ``"full"`` the format-1 package's
    audit and the nesting its areas' slack-voltage rows give back (:func:`coupling_nesting`).
    """

    privacy: str
    packages: int                    # MV packages the TSO received (every frame, round)
    areas: int
    links: int                       # areas whose link the TSO received (any frame)
    nesting: Score                   # exact: links; full: the slack rows (coupling_nesting)
    nesting_all_links: Score | None  # exact: the same attack with every link published
    bound: int | None                # exact: true groups containing a linked area
    frames: tuple[dict[str, Any], ...]
    mv: AuditReport                  # exact: last package's limit rows; full: last package
    linked: tuple[str, ...] = ()
    guessed: tuple[tuple[str, ...], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"privacy": self.privacy, "mv_packages_received": self.packages,
                "areas": self.areas, "links": self.links, "linked": list(self.linked),
                "nesting": self.nesting.as_dict(),
                "nesting_all_links": None if self.nesting_all_links is None else
                self.nesting_all_links.as_dict(),
                "nesting_on_linked_paths": self.bound,
                "groups_guessed": [list(g) for g in self.guessed],
                "frames": list(self.frames),
                ("mv_limit_rows" if self.privacy == "exact" else "mv"): self.mv.as_dict()}


def mv_packages_from_log(log_file: str | Path, public_key_pem: str, *, desk: str = "mv"
                         ) -> list[tuple[int, Any, dict[str, str], dict[str, str]]]:
    """Every package the TSO's log (``tso/messages.jsonl``) says the MV DSO's desk
    received, in order: ``(frame, package, slack_columns, slack_rows)`` with the link
    columns (exact) and slack rows (full) the TSO held when it came, each package verified
    with ``public_key_pem`` as the only trusted key."""
    from flexcore.exchange.wire import package_from_text, public_key_from_pem

    key = public_key_from_pem(public_key_pem, source=f"public key of {desk}")
    out = []
    columns: dict[str, str] = {}
    rows: dict[str, str] = {}
    with open(log_file) as fh:
        for line in fh:
            entry = json.loads(line)
            if entry["kind"] != "received":
                continue
            for msg in entry["messages"].get(desk, {}).get("from_dso", {}).values():
                columns = dict(msg.get("slack_columns", columns))
                rows = dict(msg.get("slack_rows", rows))
                if msg.get("package") is not None:
                    pkg = package_from_text(msg["package"], trusted=[key], allow_full=True,
                                            source=f"{log_file}: package of {desk}")
                    out.append((int(msg["frame"]), pkg, columns, rows))
    return out


def audit_received(log_file: str | Path, mv: Any, public_key_pem: str, *,
                   request_mw: float, desk: str = "mv", order_permutations: int = 50
                   ) -> ReceivedAudit:
    """Attack the MV packages of a region co-simulation's TSO log (``log_file``), scored
    against ``mv`` (a :class:`flexcore.region.dsos.MVDso` of the region's MV model with
    the areas' public ids as columns: the evaluator's copy of the MV DSO's truth)."""
    from flexcore.region.publish import mv_sides, slack_column_id

    got = mv_packages_from_log(log_file, public_key_pem, desk=desk)
    if not got:
        raise ValueError(f"{log_file}: no package of {desk} in the TSO's log")
    ids = list(mv.package.columns)
    truth = true_nesting(mv)
    last_frame, last, last_cols, last_rows = got[-1]
    if not isinstance(last, HardenedPackage):        # format 1 ("full")
        slack = set(last_rows.values())
        cp = last.select_rows([k in slack for k in last.vm_rows],
                              np.zeros(len(last.loading_rows), bool))
        rep = audit(last, net=mv.lin.net, keymap=mv.lin.keymap, salt_guesses=(MV_SALT,),
                    order_permutations=order_permutations)
        return ReceivedAudit("full", len(got), len(ids), 0, coupling_nesting(mv, cp), None,
                             None, ({"frame": last_frame, "rows": len(last.vm_rows) +
                                     len(last.loading_rows)},), rep)

    def score(key: str, guess: set[frozenset[str]], note: str) -> Score:
        return Score(key, "link rows -> areas sharing an MV branch", len(truth & guess),
                     len(truth), f"{len(guess)} groups guessed; {note}",
                     applicable=bool(truth))

    every: set[frozenset[str]] = set()
    linked: set[str] = set()
    frames: dict[int, dict[str, Any]] = {}
    for frame, pkg, cols, _ in got:
        g = attack_links(pkg, cols)
        every |= g
        linked |= set(cols)
        frames[frame] = {"frame": frame, "links": sorted(cols), "groups_guessed": len(g),
                         "groups_true": len(truth & g),
                         "packages": frames.get(frame, {}).get("packages", 0) + 1}
    sides = mv_sides(mv.package, [mv.slack_row[a] for a in ids], request_mw=request_mw)
    for k in range(len(ids)):
        sides.add_link(k)
    got_all = attack_links(sides.publish(rng=np.random.default_rng(0)),
                           {a: slack_column_id(a) for a in ids})
    bound = sum(1 for t in truth if t & linked)
    rep = audit(limit_rows_only(last, last_cols), net=mv.lin.net, keymap=mv.lin.keymap,
                order_permutations=order_permutations)
    return ReceivedAudit(
        "exact", len(got), len(ids), len(linked),
        score("nesting", every, f"{len(linked)} links received, every MV package of the run"),
        score("nesting_all_links", got_all, "every link published"), bound,
        tuple(frames[f] for f in sorted(frames)), rep, tuple(sorted(linked)),
        tuple(sorted(tuple(sorted(g)) for g in every)))


def write_received_audit(log_file: str | Path, mv: Any, public_key_pem: str,
                         folder: str | Path, **kw: Any) -> ReceivedAudit:
    """:func:`audit_received` into ``folder/audit_published.json``."""
    res = audit_received(log_file, mv, public_key_pem, **kw)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit_published.json").write_text(json.dumps(res.as_dict(), indent=1))
    return res
