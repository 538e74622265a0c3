"""Turn a building table (plus an optional street graph) into a radial LV grid.

Steps (all deterministic):

1. Street graph: the street table's segments; without one, a Euclidean minimum spanning
   tree over the buildings and the substations stands in for the streets.
2. Every building is tapped onto its nearest street segment (the tap splits the segment);
   the house-connection cable runs from the tap to the building.
3. Substations are placed at the street nodes closest to the load-weighted centres of
   ``n_substations`` groups of buildings (seeded k-means on the coordinates).
4. Each street node is fed from its nearest substation along the shortest street path
   (a multi-source shortest-path tree): the result is radial by construction, and only the
   street segments on some building's path get a cable.
5. Cables: pandapower standard types. Street cables ``NAYY 4x150 SE`` (the usual German
   LV feeder cable); where the diversified design load downstream exceeds what one cable
   carries, or more than 30 buildings hang on one cable (a common DSO planning limit),
   cables are laid in parallel (pandapower's ``parallel``). House connections
   ``NAYY 4x50 SE`` for up to three dwellings, ``NAYY 4x150 SE`` for larger buildings.
   Cable lengths are street lengths plus 5 % for routing slack.
6. Substation: an MV external grid (20 kV) feeds each ``0.63 MVA 20/0.4 kV`` transformer
   through a short MV cable.

Design load (planning, not simulation): per building ``annual_kwh / 1000 h`` kW peak
(about 4 kW for a 4,000 kWh house, the order of DIN 18015-1's per-dwelling figures once
heat pumps and wallboxes are expected), diversified downstream with the Kerber/DIN rule
``g(N) = g_inf + (1 - g_inf) N^(-3/4)``, ``g_inf = 0.15``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandapower as pp
import pandas as pd

from flexcore.errors import FlexcosimError


class GridError(FlexcosimError, ValueError):
    """A grid source cannot be loaded or built, or a power flow does not converge."""


STREET_CABLE = "NAYY 4x150 SE"
SMALL_HOUSE_CABLE = "NAYY 4x50 SE"
LARGE_HOUSE_CABLE = "NAYY 4x150 SE"
MV_CABLE = "NA2XS2Y 1x185 RM/25 12/20 kV"
TRAFO_TYPE = "0.63 MVA 20/0.4 kV"
ROUTING_SLACK = 1.05
COS_PHI = 0.97
#: base-case load as a multiple of the annual mean (H0's winter evening is ~2x the mean)
BASE_LOAD_FACTOR = 2.0


@dataclass(frozen=True)
class GridOptions:
    n_substations: int = 3
    trafo_type: str = TRAFO_TYPE
    street_cable: str = STREET_CABLE
    mv_cable_km: float = 0.3
    ext_grid_vm_pu: float = 1.02
    design_kw_per_mwh: float = 1.0  # planning peak: 1 kW per MWh/a
    g_inf: float = 0.15
    pv_kwp_per_roof_m2: float = 0.1  # 0.2 kWp/m2 on ~50 % of the roof
    max_connections_per_cable: int = 30
    seed: int = 0


def diversity(n: int, g_inf: float) -> float:
    """Kerber-style simultaneity factor for n connections."""
    return g_inf + (1.0 - g_inf) * max(n, 1) ** -0.75


def build_grid(table: pd.DataFrame, streets: pd.DataFrame | None = None, *,
               options: GridOptions | None = None, name: str = "district",
               source: str | None = None) -> pp.pandapowerNet:
    """Radial LV grid for a validated building table (see module docstring); ``source``
    (default ``name``) names the table in errors."""
    opt = options or GridOptions()
    src = source or name
    if not len(table):
        raise GridError(f"{src}: the building table has no buildings")
    if opt.n_substations < 1:
        raise GridError(f"{src}: the number of substations must be >= 1, "
                        f"got {opt.n_substations}")
    if len(table) < opt.n_substations:
        raise GridError(f"{src}: {len(table)} building(s) for {opt.n_substations} substations: "
                        "use --substations <= the number of buildings")
    xy = table[["x_m", "y_m"]].to_numpy(float)
    weights = table["annual_kwh"].to_numpy(float)
    centres = _substation_centres(xy, weights, opt.n_substations, opt.seed)
    graph = _street_graph(streets, xy, centres)
    taps = _tap_buildings(graph, xy)
    sub_nodes = [_nearest_node(graph, c) for c in centres]
    if len(set(sub_nodes)) < len(sub_nodes):
        raise GridError("two substations snap to the same street node: use fewer substations")
    tree = _feeder_tree(graph, sub_nodes, set(taps))

    net = pp.create_empty_network(name=name, f_hz=50.0)
    mv = pp.create_bus(net, 20.0, name="MV grid", type="b", geodata=(float(np.mean(xy[:, 0])),
                                                                     float(xy[:, 1].min() - 80)))
    pp.create_ext_grid(net, mv, vm_pu=opt.ext_grid_vm_pu, name="MV grid")
    node_bus: dict = {}
    for k, node in enumerate(sub_nodes):
        sub_mv = pp.create_bus(net, 20.0, name=f"substation {k + 1} MV", geodata=node)
        pp.create_line(net, mv, sub_mv, opt.mv_cable_km, MV_CABLE, name=f"MV cable {k + 1}")
        lv = pp.create_bus(net, 0.4, name=f"substation {k + 1} LV", type="b", geodata=node)
        pp.create_transformer(net, sub_mv, lv, opt.trafo_type, name=f"substation {k + 1}")
        node_bus[node] = lv
    # street buses in a deterministic order (breadth first from the substations)
    order = [n for root in sub_nodes for n in nx.bfs_tree(tree, root) if n != root]
    for node in order:
        node_bus[node] = pp.create_bus(net, 0.4, name=f"street {len(node_bus)}", geodata=node)

    # design load downstream of every street node, for cable sizing
    design_kw = weights * opt.design_kw_per_mwh / 1000.0
    count = np.ones(len(table))
    down_kw: dict = {n: 0.0 for n in tree.nodes}
    down_n: dict = {n: 0 for n in tree.nodes}
    for b, node in enumerate(taps):
        down_kw[node] += design_kw[b]
        down_n[node] += int(count[b])
    for node in reversed(order):
        parent = tree.nodes[node]["parent"]
        down_kw[parent] += down_kw[node]
        down_n[parent] += down_n[node]

    cable_ka = float(net.std_types["line"][opt.street_cable]["max_i_ka"])
    for node in order:
        parent = tree.nodes[node]["parent"]
        length_km = tree.edges[parent, node]["length_m"] * ROUTING_SLACK / 1000.0
        design_ka = down_kw[node] * diversity(down_n[node], opt.g_inf) / (math.sqrt(3) * 0.4) / 1e3
        parallel = max(1, math.ceil(design_ka / (0.8 * cable_ka)),
                       math.ceil(down_n[node] / opt.max_connections_per_cable))
        pp.create_line(net, node_bus[parent], node_bus[node], max(length_km, 0.001),
                       opt.street_cable, name=f"street cable {len(net.line)}", parallel=parallel)

    for b, row in enumerate(table.itertuples(index=False)):
        bus = pp.create_bus(net, 0.4, name=f"house {row.building_id}", geodata=(row.x_m, row.y_m))
        tap_xy = taps[b]
        length_km = math.dist(tap_xy, (row.x_m, row.y_m)) * ROUTING_SLACK / 1000.0
        cable = SMALL_HOUSE_CABLE if (row.dwellings <= 3 and row.type in (
            "single_house", "duplex", "townhouse")) else LARGE_HOUSE_CABLE
        pp.create_line(net, node_bus[tap_xy], bus, max(length_km, 0.005), cable,
                       name=f"house connection {row.building_id}")
        p_mw = row.annual_kwh / 8760.0 / 1000.0 * BASE_LOAD_FACTOR
        pp.create_load(net, bus, p_mw=round(p_mw, 6),
                       q_mvar=round(p_mw * math.tan(math.acos(COS_PHI)), 6),
                       name=row.building_id)
        kwp = row.roof_area_m2 * opt.pv_kwp_per_roof_m2
        pp.create_sgen(net, bus, p_mw=0.0, sn_mva=round(kwp / 1000.0, 6), name=row.building_id,
                       type="PV")
    net.bus["zone"] = None
    return net


# --------------------------------------------------------------------------- geometry
def _substation_centres(xy: np.ndarray, w: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Weighted k-means (deterministic start: quantiles along the longer axis)."""
    axis = int(np.ptp(xy[:, 0]) < np.ptp(xy[:, 1]))
    order = np.argsort(xy[:, axis], kind="stable")
    groups = np.array_split(order, k)
    centres = np.array([np.average(xy[g], axis=0, weights=w[g]) for g in groups])
    for _ in range(50):
        label = np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        new = np.array([np.average(xy[label == j], axis=0, weights=w[label == j])
                        if np.any(label == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres


def _key(x: float, y: float) -> tuple[float, float]:
    return (round(float(x), 2), round(float(y), 2))


def _street_graph(streets: pd.DataFrame | None, xy: np.ndarray, centres: np.ndarray) -> nx.Graph:
    g = nx.Graph()
    if streets is not None and len(streets):
        for r in streets.itertuples(index=False):
            a, b = _key(r.x1_m, r.y1_m), _key(r.x2_m, r.y2_m)
            if a != b:
                g.add_edge(a, b, length_m=math.dist(a, b))
        if not nx.is_connected(g):
            raise GridError("the street graph is not connected; join its parts or drop it")
        return g
    # no streets: Euclidean minimum spanning tree over buildings and substation centres
    pts = [_key(*p) for p in np.vstack([xy, centres])]
    full = nx.Graph()
    for i, a in enumerate(pts):
        for b in pts[i + 1:]:
            if a != b:
                full.add_edge(a, b, length_m=math.dist(a, b))
    return nx.minimum_spanning_tree(full, weight="length_m")


def _tap_buildings(g: nx.Graph, xy: np.ndarray) -> list[tuple[float, float]]:
    """Tap every building onto its nearest street segment; returns the tap node per building."""
    edges = sorted(g.edges())
    a = np.array([e[0] for e in edges])
    b = np.array([e[1] for e in edges])
    ab = b - a
    ab2 = np.maximum((ab ** 2).sum(1), 1e-9)
    taps_on_edge: dict = {}
    taps = []
    for p in xy:
        t = np.clip(((p - a) * ab).sum(1) / ab2, 0.0, 1.0)
        proj = a + t[:, None] * ab
        k = int(np.argmin(((proj - p) ** 2).sum(1)))
        node = _key(*proj[k])
        taps.append(node)
        taps_on_edge.setdefault(edges[k], []).append((float(t[k]), node))
    for (u, v), items in taps_on_edge.items():
        g.remove_edge(u, v)
        chain = [u] + [n for _, n in sorted(set(items))] + [v]
        for p, q in zip(chain[:-1], chain[1:]):
            if p != q:
                g.add_edge(p, q, length_m=math.dist(p, q))
    return taps


def _nearest_node(g: nx.Graph, c: np.ndarray) -> tuple[float, float]:
    nodes = sorted(g.nodes)
    d = [math.dist(n, c) + (0.0 if g.degree(n) > 2 else 25.0) for n in nodes]  # prefer junctions
    return nodes[int(np.argmin(d))]


def _feeder_tree(g: nx.Graph, roots: list, needed: set) -> nx.DiGraph:
    """Shortest-path tree from the nearest substation, pruned to paths that reach a tap."""
    _, paths = nx.multi_source_dijkstra(g, set(roots), weight="length_m")
    tree = nx.DiGraph()
    for root in roots:
        tree.add_node(root, parent=None)
    for node in sorted(needed):
        path = paths[node]
        for parent, child in zip(path[:-1], path[1:]):
            if child not in tree:
                tree.add_edge(parent, child, length_m=g.edges[parent, child]["length_m"])
                tree.nodes[child]["parent"] = parent
    return tree
