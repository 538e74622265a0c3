"""Grids the tests build from the shipped ones."""
from __future__ import annotations

import copy

import networkx as nx
import pandapower as pp
import pandapower.topology as top


def meshed(net):
    """A copy of a radial LV grid with one loop closed between leaves of two different
    feeders of its first transformer (a NAYY 4x150 SE line of 100 m named "loop")."""
    g = top.create_nxgraph(net)
    lv = int(net.trafo.lv_bus.iloc[0])
    h = g.copy()
    h.remove_node(lv)
    feeder = {b: k for k, c in enumerate(nx.connected_components(h)) for b in c}
    leaves = sorted(b for b in g.nodes if g.degree(b) == 1 and b in feeder)
    a = leaves[0]
    b = next(x for x in leaves if feeder[x] != feeder[a])
    out = copy.deepcopy(net)
    pp.create_line(out, a, b, 0.1, "NAYY 4x150 SE", name="loop")
    return out
