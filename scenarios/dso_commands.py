"""The DSO's commands (``flexcosim dso linearize|validate|refine``): file glue over
:mod:`flexcore.dso`. Application code: it reads and writes the exchange files.

The private key map of a package folder ``PKG`` is ``PKG.keymap.json`` beside it (never
inside the folder that is sent to the TSO), and an existing key map is never overwritten
unless ``force``.
"""
from __future__ import annotations

from pathlib import Path

from flexcore.dso import KeyMap, KeyMapError, Linearizer, PointNotConverged
from flexcore.exchange.bids import read_bids
from flexcore.exchange.package import load_full_package, save_package


def _load_grid(path):
    from flexcore.grid.grids import load_grid

    return load_grid(path)


def keymap_path_for(package_dir) -> Path:
    """The default key map of a package folder: ``<folder>.keymap.json`` beside it."""
    p = Path(package_dir).resolve()
    return p.parent / f"{p.name}.keymap.json"


def _keymap_target(package_dir, keymap, *, force: bool) -> Path:
    """Where the key map of the package written to ``package_dir`` goes; KeyMapError for a
    path inside the package folder or an existing file (unless ``force``)."""
    path = Path(keymap) if keymap else keymap_path_for(package_dir)
    pkg = Path(package_dir).resolve()
    if pkg == path.resolve() or pkg in path.resolve().parents:
        raise KeyMapError(f"{path}: the private key map must not be inside the package folder "
                          f"{package_dir} (the folder is sent to the TSO)")
    if path.exists() and not force:
        raise KeyMapError(f"{path}: exists; refusing to overwrite a key map (it may belong to "
                          "another package; use --force)")
    return path


def private_package_for(keymap_path) -> Path:
    """The DSO's private format-1 package that goes with a key map ``PKG.keymap.json``:
    the folder ``PKG.private`` beside it (predictions, validation and refinement of a
    format-2 exchange use it; it is never sent)."""
    p = Path(keymap_path)
    name = p.name.removesuffix(".keymap.json")
    return p.with_name(f"{name}.private")


def _publish(package, *, level, bids, linearizer=None) -> tuple[object, str]:
    """The package as published at ``level``: format 1 itself ("full"), or its hardened
    (format 2) or envelope form (its corners checked in AC with ``linearizer``). Returns
    (published package, note)."""
    from flexcore.exchange.enums import PrivacyLevel

    box = bids.subset(package.columns)
    if level == PrivacyLevel.EXACT:
        from flexcore.dso.privacy import harden

        published, hkey = harden(package, lower_mw=box.lower_mw, upper_mw=box.upper_mw)
        return published, f"\nformat 2 (exact): {hkey.report}"
    if level == PrivacyLevel.ENVELOPE:
        from flexcore.dso.envelope import envelope_with_report

        env, rep = envelope_with_report(package, box, linearizer=linearizer)
        return env, (f"\nformat 2 (envelope): point {list(rep.points)}, up to "
                     f"{rep.upper_total_mw:.6g} MW / down to {rep.lower_total_mw:.6g} MW, "
                     f"AC corners safe: {rep.ac_safe} after {rep.rounds} tightening round(s)")
    return package, ""


def _write_private(package, keymap_path: Path, *, force: bool) -> Path:
    path = private_package_for(keymap_path)
    if path.exists() and any(path.iterdir()) and not force:
        raise KeyMapError(f"{path}: exists; refusing to overwrite the DSO's private package "
                          "(use --force)")
    return save_package(package, path)


def linearize_cli(*, grid, bids, points, screen, out, keymap=None, force=False,
                  sign=None, privacy="exact") -> str:
    """Linearise and publish: ``privacy`` "exact" (format 2, default), "envelope" or
    "full" (format 1, research). The key map and, for format 2, the DSO's private format-1
    package are written beside the package folder, never inside it."""
    from flexcore.exchange.enums import PrivacyLevel

    level = PrivacyLevel.parse(privacy, where="--privacy")
    net = _load_grid(grid)
    table = read_bids(bids, require_bus=True)
    keymap_path = _keymap_target(out, keymap, force=force)
    try:
        lin = Linearizer(net, table)
        rep = lin.linearize(points, screen_rows=screen)
    except PointNotConverged as exc:  # name the grid: the message alone does not
        raise PointNotConverged(f"{grid}: {exc}") from None
    out = Path(out)
    published, note = _publish(rep.package, level=level, bids=table, linearizer=lin)
    save_package(published, out, signing_key=sign)
    lin.keymap.save(keymap_path, overwrite=force)
    text = rep.as_text() + note
    if lin.isolated_buses:
        b = lin.isolated_buses
        text += (f"\nisolated buses (cut off from every source, left out of the package): "
                 f"{len(b)}: {', '.join(map(str, b[:20]))}{' ...' if len(b) > 20 else ''}")
    text += f"\npackage{' (signed)' if sign else ''}: {out}\nprivate key map (keep it): " \
        f"{keymap_path}"
    if level != PrivacyLevel.FULL:
        private = _write_private(rep.package, keymap_path, force=force)
        text += f"\nprivate format-1 package (keep it): {private}"
    return text


def _clearing_keymap(clearing: Path) -> Path:
    """The one ``*.keymap.json`` next to the clearing (KeyMapError for none or several)."""
    found = sorted(clearing.resolve().parent.glob("*.keymap.json"))
    if len(found) != 1:
        raise KeyMapError(f"{clearing}: {len(found)} key maps (*.keymap.json) beside it "
                          f"{[f.name for f in found][:5]}; name one with --keymap")
    return found[0]


def validate_cli(*, grid, bids, clearing, keymap, out, trust=(),
                 require_signature=False) -> tuple[str, bool]:
    """Validate a clearing in an AC power flow; (report text, safe) — safe: converged and
    every AC limit kept (``flexcosim dso validate`` exits 1 otherwise). A clearing that
    activates an id that is not a bid, or a bid outside its bounds, is refused
    (:class:`~flexcore.exchange.clearing.ClearingError`, exit 2)."""
    from flexcore.market import read_clearing

    result = read_clearing(clearing, trust=trust, require_signature=require_signature)
    table = read_bids(bids, require_bus=True)
    result.check_activation(table.ids, table.lower_mw, table.upper_mw)
    km_path = Path(keymap) if keymap else _clearing_keymap(Path(clearing))
    km = KeyMap.load(km_path)
    lin = Linearizer(_load_grid(grid), table, keymap=km)
    private = private_package_for(km_path)
    # format 2: the DSO predicts from its private package; format 1: the clearing's own
    report = lin.validate(result, package=load_full_package(private) if private.is_dir()
                          else None)
    from flexcore.runs import write_json

    write_json(out, report.to_json())
    return report.as_text() + f"\nreport: {out}", report.safe


def refine_cli(*, grid, bids, package, clearing, keymap, out, sign=None, trust=(),
               require_signature=False, force=False) -> str:
    from flexcore.exchange.enums import PrivacyLevel
    from flexcore.exchange.package import load_package
    from flexcore.market import read_clearing

    km_path = Path(keymap) if keymap else keymap_path_for(package)
    private = private_package_for(km_path)
    published = load_package(package, allow_full=True)
    level = PrivacyLevel(getattr(published, "privacy", PrivacyLevel.FULL))
    pkg = load_full_package(private if private.is_dir() else package)
    result = read_clearing(clearing, trust=trust, require_signature=require_signature)
    table = read_bids(bids, require_bus=True)
    result.check_activation(table.ids, table.lower_mw, table.upper_mw)
    km = KeyMap.load(km_path)
    dest = _keymap_target(out, None, force=force)
    lin = Linearizer(_load_grid(grid), table, keymap=km)
    new = lin.refine(pkg, result)
    out = Path(out)
    again, _ = _publish(new, level=level, bids=table)
    save_package(again, out, signing_key=sign)
    km.save(dest, overwrite=force)
    text = f"package with {new.m} operating points: {out}\nprivate key map (keep it): {dest}"
    if level != PrivacyLevel.FULL:
        text += f"\nprivate format-1 package (keep it): {_write_private(new, dest, force=force)}"
    return text
