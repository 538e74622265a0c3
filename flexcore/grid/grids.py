"""The DSO's grid model: the shipped Bergwald district, any pandapower JSON, any SimBench LV grid.

Every load bus is a building connection point; a load's ``name`` is its building id (for
SimBench grids the SimBench load name).
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandapower as pp
import pandas as pd

from flexcore.district import buildings as district
from flexcore.grid.gridgen import GridError, GridOptions, build_grid

BERGWALD = "bergwald"


def bergwald_grid_path() -> Path:
    return district.data_path("bergwald_grid.json")


def build_bergwald(*, options: GridOptions | None = None) -> pp.pandapowerNet:
    """Rebuild the Bergwald grid from the shipped building and street tables."""
    table = district.load_building_table()
    streets = district.load_street_table()
    return build_grid(table, streets, options=options, name="Bergwald (synthetic)")


def build_from_table(table_path: str | Path, streets_path: str | Path | None = None, *,
                     options: GridOptions | None = None) -> pp.pandapowerNet:
    table = district.load_building_table(table_path)
    streets = district.load_street_table(streets_path) if streets_path else None
    return build_grid(table, streets, options=options, name=Path(table_path).stem,
                      source=str(table_path))


@functools.lru_cache(maxsize=8)
def _simbench_cached(code: str) -> pp.pandapowerNet:
    import simbench

    try:
        net = simbench.get_simbench_net(code)
    except Exception as exc:  # simbench raises bare Exceptions for unknown codes
        raise GridError(f"unknown or unreadable SimBench code {code!r}: {exc}") from None
    net.load["name"] = net.load["name"].astype(str)
    # SimBench stores geodata and profiles we do not need; drop profiles to keep copies cheap
    net.profiles = {}
    return net


def _level(code: str) -> str:
    parts = code.split("-")
    return parts[1] if len(parts) > 1 else ""


def load_simbench(code: str, *, allow_mvlv: bool = False) -> pp.pandapowerNet:
    """A SimBench LV grid (cached: get_simbench_net re-reads large CSV files); with
    ``allow_mvlv`` also an MV+LV region (``1-MVLV-...``, the region path)."""
    level = _level(code)
    if not (level.startswith("LV") or (allow_mvlv and level.startswith("MVLV"))):
        what = "a low-voltage or MV+LV" if allow_mvlv else "a low-voltage"
        raise GridError(f"SimBench code {code!r} is not {what} grid")
    return copy.deepcopy(_simbench_cached(code))


@functools.lru_cache(maxsize=8)
def _json_cached(path: str, mtime_ns: int, size: int) -> pp.pandapowerNet:
    """A parsed pandapower JSON file (``pp.from_json`` takes ~0.5-2 s for Bergwald and every
    simulator of a run loads the grid); keyed by the file's modification time and size."""
    return pp.from_json(path)


def _read_json(path: Path) -> pp.pandapowerNet:
    st = path.stat()
    return copy.deepcopy(_json_cached(str(path.resolve()), st.st_mtime_ns, st.st_size))


def load_grid(source: str | Path, *, allow_mvlv: bool = False) -> pp.pandapowerNet:
    """``"bergwald"``, ``"simbench:CODE"`` (or a bare SimBench code), or a pandapower JSON path
    (a fresh object on every call; ``allow_mvlv``: MV+LV SimBench codes too, for the region
    path)."""
    text = str(source)
    if text.lower() == BERGWALD:
        path = bergwald_grid_path()
        return _read_json(path) if path.is_file() else build_bergwald()
    if text.startswith("simbench:"):
        return load_simbench(text.split(":", 1)[1], allow_mvlv=allow_mvlv)
    path = Path(text)
    if path.is_file():
        try:
            net = _read_json(path)
        except Exception as exc:  # pandapower raises many kinds for a broken file
            raise GridError(f"{path}: not a readable pandapower JSON grid ({exc})") from None
        validate_grid(net, path)
        return net
    if text.startswith("1-LV-") or (allow_mvlv and text.startswith("1-MVLV-")):
        return load_simbench(text, allow_mvlv=allow_mvlv)
    raise GridError(f"grid source not found: {text!r} (a JSON path, 'bergwald' or "
                    "'simbench:1-LV-...')")


def _bad(table: pd.DataFrame, columns, *, positive: bool) -> list[int]:
    """Indices of in-service rows with a non-finite (or, with ``positive``, <= 0) value."""
    rows = table[table.in_service.astype(bool)] if "in_service" in table else table
    bad = np.zeros(len(rows), bool)
    for c in columns:
        if c not in rows:
            continue
        v = pd.to_numeric(rows[c], errors="coerce").to_numpy(float)
        bad |= ~np.isfinite(v) | ((v <= 0) if positive else False)
    return rows.index[bad].tolist()


def validate_grid(net: pp.pandapowerNet, source: str | Path) -> None:
    """Check a grid before any power flow; raises :class:`GridError` naming ``source`` and
    the element (table and index) for what pandapower would turn into a traceback or a
    silent NaN: no buses, no in-service ``ext_grid``, a bus without voltage level, elements
    at buses that do not exist, a line with non-finite or non-positive length or impedance,
    a transformer with bad ratings or short-circuit voltages. Islands (buses cut off from
    every ``ext_grid``) are allowed: they are left out of the model and reported."""
    where = str(source)
    if not len(net.bus):
        raise GridError(f"{where}: the grid has no buses")
    bad = _bad(net.bus, ["vn_kv"], positive=True)
    if bad:
        raise GridError(f"{where}: bus {bad[0]} has no valid voltage level vn_kv "
                        f"({len(bad)} bus(es) in all)")
    ext = net.ext_grid[net.ext_grid.in_service.astype(bool)] if len(net.ext_grid) else \
        net.ext_grid
    if not len(ext):
        raise GridError(f"{where}: the grid has no in-service ext_grid (no reference bus: "
                        "add the upstream grid connection)")
    buses = set(net.bus.index.tolist())
    for table, cols in (("ext_grid", ("bus",)), ("load", ("bus",)), ("sgen", ("bus",)),
                        ("line", ("from_bus", "to_bus")), ("trafo", ("hv_bus", "lv_bus")),
                        ("switch", ("bus",))):
        t = net[table] if table in net else None
        if t is None or not len(t):
            continue
        for c in cols:
            unknown = ~t[c].isin(buses)
            if unknown.any():
                i = t.index[unknown.to_numpy()][0]
                raise GridError(f"{where}: {table} {i} refers to {c} {t.at[i, c]}, which is "
                                "not a bus of the grid")
    checks = (
        ("line", ["length_km", "max_i_ka"], True, "length_km or max_i_ka"),
        ("line", ["r_ohm_per_km", "x_ohm_per_km", "c_nf_per_km"], False,
         "r/x/c per km"),
        ("trafo", ["sn_mva", "vn_hv_kv", "vn_lv_kv", "vk_percent"], True,
         "sn_mva, vn_hv_kv, vn_lv_kv or vk_percent"),
        ("trafo", ["vkr_percent", "pfe_kw", "i0_percent"], False,
         "vkr_percent, pfe_kw or i0_percent"),
    )
    for table, cols, positive, what in checks:
        if table not in net or not len(net[table]):
            continue
        bad = _bad(net[table], cols, positive=positive)
        if bad:
            kind = "non-finite or non-positive" if positive else "non-finite"
            raise GridError(f"{where}: {table} {bad[0]} has a {kind} {what} "
                            f"({len(bad)} {table}(s) in all)")
    if len(net.line):
        on = net.line[net.line.in_service.astype(bool)]
        z = np.hypot(on.r_ohm_per_km.to_numpy(float), on.x_ohm_per_km.to_numpy(float))
        if (z <= 0).any():
            i = on.index[z <= 0][0]
            raise GridError(f"{where}: line {i} has zero impedance (r_ohm_per_km = "
                            "x_ohm_per_km = 0): use a bus-bus switch instead")
    if len(net.trafo):
        t = net.trafo[net.trafo.in_service.astype(bool)]
        over = t.vkr_percent.to_numpy(float) > t.vk_percent.to_numpy(float)
        if over.any():
            raise GridError(f"{where}: trafo {t.index[over][0]} has vkr_percent > vk_percent")


def isolated_buses(net: pp.pandapowerNet) -> list[int]:
    """In-service buses with no path to an in-service ``ext_grid`` (switches respected):
    an island behind an open switch or an out-of-service line. They are left out of the
    power flow and of every package; bids on them are undeliverable."""
    import pandapower.topology as top

    return sorted(int(b) for b in top.unsupplied_buses(net, respect_switches=True))


def connection_points(net: pp.pandapowerNet) -> pd.DataFrame:
    """One row per building connection: building_id, bus, load index (in-service loads)."""
    loads = net.load[net.load.in_service]
    return pd.DataFrame({"building_id": loads["name"].astype(str).to_numpy(),
                         "bus": loads["bus"].to_numpy(np.int64),
                         "load": loads.index.to_numpy(np.int64)})


def run_power_flow(net: pp.pandapowerNet, *, name: str = "grid", **kwargs) -> None:
    """AC power flow; raises GridError (not pandapower's exception) if it does not converge."""
    try:
        pp.runpp(net, **kwargs)
    except pp.LoadflowNotConverged:
        raise GridError(f"{name}: the base-case AC power flow did not converge") from None


# --------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class GridSummary:
    name: str
    buses: int
    lv_buses: int
    lines: int
    line_km: float
    trafos: int
    trafo_mva: tuple[float, ...]
    connections: int
    buildings_by_type: dict[str, int] = field(default_factory=dict)
    load_mw: float = math.nan
    vm_min_pu: float = math.nan
    vm_max_pu: float = math.nan
    max_line_loading_percent: float = math.nan
    max_trafo_loading_percent: float = math.nan
    radial: bool = True
    isolated: tuple[int, ...] = ()  # in-service buses cut off from every source

    def as_text(self) -> str:
        rows = [
            ("grid", self.name),
            ("buses (LV)", f"{self.buses} ({self.lv_buses})"),
            ("lines", f"{self.lines} ({self.line_km:.2f} km)"),
            ("transformers", ", ".join(f"{s * 1000:.0f} kVA" for s in self.trafo_mva) or "-"),
            ("building connections", str(self.connections)),
        ]
        rows += [(f"  {t}", str(n)) for t, n in self.buildings_by_type.items()]
        rows += [
            ("base load", f"{self.load_mw:.3f} MW"),
            ("voltage range", f"{self.vm_min_pu:.4f} .. {self.vm_max_pu:.4f} p.u."),
            ("peak line loading", f"{self.max_line_loading_percent:.1f} %"),
            ("peak trafo loading", f"{self.max_trafo_loading_percent:.1f} %"),
            ("radial", "yes" if self.radial else "no"),
            ("isolated buses", _island_text(self.isolated)),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _island_text(buses: tuple[int, ...]) -> str:
    if not buses:
        return "none"
    head = ", ".join(str(b) for b in buses[:20]) + (" ..." if len(buses) > 20 else "")
    return f"{len(buses)} (out of the model, bids there undeliverable): {head}"


def is_radial(net: pp.pandapowerNet) -> bool:
    import networkx as nx
    import pandapower.topology as top

    graph = top.create_nxgraph(net, respect_switches=True, multi=True)
    if not nx.is_connected(nx.Graph(graph)):  # islands: radial is a property of one tree
        return False
    return (nx.is_forest(nx.Graph(graph))
            and graph.number_of_edges() == nx.Graph(graph).number_of_edges())


def summarize(net: pp.pandapowerNet, *, table: pd.DataFrame | None = None,
              source: str | Path | None = None) -> GridSummary:
    """Summary with one AC power flow of the base case (``source`` names the grid in
    errors)."""
    run_power_flow(net, name=str(source or net.name or "grid"))
    cp = connection_points(net)
    by_type: dict[str, int] = {}
    if table is not None:
        by_type = table["type"].value_counts().reindex(district.BUILDING_TYPES).dropna() \
            .astype(int).to_dict()
    lv = net.bus.vn_kv < 1.0
    return GridSummary(
        name=str(net.name or "grid"),
        buses=len(net.bus), lv_buses=int(lv.sum()),
        lines=len(net.line), line_km=float(net.line.length_km.sum()),
        trafos=len(net.trafo), trafo_mva=tuple(float(s) for s in net.trafo.sn_mva),
        connections=len(cp), buildings_by_type=by_type,
        load_mw=float(net.load.p_mw[net.load.in_service].sum()),
        vm_min_pu=float(net.res_bus.vm_pu[lv].min()), vm_max_pu=float(net.res_bus.vm_pu[lv].max()),
        isolated=tuple(isolated_buses(net)),
        max_line_loading_percent=float(net.res_line.loading_percent.max()),
        max_trafo_loading_percent=(float(net.res_trafo.loading_percent.max())
                                   if len(net.trafo) else 0.0),
        radial=is_radial(net),
    )
