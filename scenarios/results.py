"""Run-folder writing: an in-process mosaik Recorder, the element table, the crash-safe
table format and its reader, and the final summary.

Tables (``results/README.md`` lists every column; the README is copied into every run
folder): ``frames`` (one row per recorded frame), ``units`` (one row per flexibility unit
and frame), ``bids``, ``setpoints``, ``voltages``, ``loadings``, ``predictions`` and the
``all_active_*`` state of the DSO report. Bus and branch results are LONG tables with the
integer ``element_id`` of ``elements.parquet`` (:func:`element_table`, the DSO's private map
from element ids to pandapower indices, buildings, feeders and transformers)::

    voltages, all_active_voltages:  frame:int64, element_id:int64, vm_pu:float64
    loadings, all_active_loadings:  frame:int64, element_id:int64, loading_percent:float64

one row per element of the kind (NaN where the power flow gave no value), rows ordered by
``frame`` then ``element_id``.

Crash safety: while running every table is an Arrow IPC stream file
``timeseries/<table>.arrows``. The Recorder keeps each finished frame's rows in memory and
writes them every :data:`FLUSH_FRAMES` frames or :data:`FLUSH_S` seconds, whichever comes
first (params ``flush_frames``, ``flush_s``): one record batch per table (buffers
compressed, :data:`STREAM_COMPRESSION`) handed to the operating system at once
(``pyarrow.OSFile``), every other table first, then ``frames.arrows``, then the frames'
rows in ``timeseries/frames.csv`` (flushed). A frame listed in ``frames.csv`` has all its
rows on disk even after SIGKILL; a kill loses at most the frames since the last write,
which are not listed. An interrupt or a crash in the runner (:func:`close_open_recorders`)
writes the buffered frames first. :func:`read_table` reads the complete batches of a
stream one by one and ignores a torn tail. At the normal end each stream is converted to
``timeseries/<table>.parquet`` batch by batch in row groups (never the whole year in
memory) and removed. ``read_table(run_dir, name, columns=..., frames=...)`` reads either
form, whole or in parts.

Without the ``grid`` param (hand-made recorders) there is no element table and no
voltage / loading tables.

Warm-up: the Recorder gets the run-clock indices of the warm-up frames (param ``warmup``)
and records nothing for them; the tables' ``frame`` counts the recorded frames only (0, 1,
...), so a run with and without warm-up has the same frame numbers.

Units that broke the plug-in contract (flagged and neutralised by FPUSim) and set-points
clipped to a unit's feasible range are listed in ``timeseries/unit_flags.csv`` (``frame,
unit_id, kind, reason``, ``kind`` = ``flagged`` | ``clipped``, appended and flushed with
every write, before ``frames.csv``); the frame's ``message`` names the flagged units. A
dispatched frame whose AC accuracy (voltage or loading MAE) ends above the scenario's
tolerance (params ``tol_vm_mae_pu``, ``tol_loading_mae_percent``) gets
``above_tolerance = True`` and a message; every frame that is not optimal-and-dispatched
says why in ``message``.

Frames are those of the scenario's :class:`~flexcore.district.clock.FrameClock` (param
``clock``): each row carries ``frame``, ``day_type``, ``slot`` and a tz-aware ``timestamp``
(ISO 8601 with ``+01:00`` in the CSV files). Columns ending in ``_mw`` are frame means and
``cost_eur_per_h`` a rate; :func:`summarize` turns them into MWh and EUR with
``clock.frame_h``.

Bids and set-points cross the co-simulation by per-run pseudonym (simulators.fpu_sim); the
Recorder gets the private map pseudonym -> unit (param ``bid_units``), writes it to
``dso/bid_pseudonyms.json`` and keeps ``unit_id`` in ``bids`` and the unit-level tables.
"""
from __future__ import annotations

import csv
import itertools
import logging
import math
import os
import time as _time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from flexcore.district.clock import TIMEZONE, FrameClock
from flexcore.errors import InputFileError
from flexcore.runs import write_json
from simulators import FrameSimulator, meta_from_table

FRAME_COLUMNS = (
    "frame", "day_type", "slot", "status", "dispatched", "request_mw", "delivered_mw",
    "cost_eur_per_h", "operating_point", "rounds", "relinearized", "fix_moved_mw", "points",
    "build_time_s", "solve_time_s", "dso_time_s",
    "vm_mae_pu", "vm_rmse_pu", "vm_max_err_pu", "loading_mae_percent", "loading_rmse_percent",
    "loading_max_err_percent", "ac_converged", "ac_violations", "vm_min_pu", "vm_max_pu",
    "loading_max_percent", "p_slack_mw", "n_offers", "offered_up_mw", "offered_down_mw",
    "clipped_units", "flagged_units", "above_tolerance", "message", "wall_time_s", "timestamp",
)
_INT, _BOOL, _STR, _F = pa.int64(), pa.bool_(), pa.string(), pa.float64()
_FRAME_TYPES = {
    **dict.fromkeys(("frame", "slot", "rounds", "points", "ac_violations", "n_offers",
                     "clipped_units", "flagged_units"), _INT),
    **dict.fromkeys(("dispatched", "relinearized", "ac_converged", "above_tolerance"), _BOOL),
    **dict.fromkeys(("day_type", "status", "operating_point", "message"), _STR),
    "timestamp": pa.timestamp("ns", tz=TIMEZONE)}
#: the unit table's fixed columns (then one ``state_<key>`` float column per key of the
#: units' ``state()`` dicts, fixed by the first recorded frame)
UNIT_COLUMNS = {"frame": _INT, "unit_id": _STR, "building": _STR, "class": _STR,
                "baseline_mw": _F, "offered_up_mw": _F, "offered_down_mw": _F,
                "requested_mw": _F, "applied_mw": _F, "p_mw": _F, "profile_mw": _F,
                "clipped": _BOOL, "clip_reason": _STR, "flagged": _BOOL}
_VM = {"frame": _INT, "element_id": _INT, "vm_pu": _F}
_LD = {"frame": _INT, "element_id": _INT, "loading_percent": _F}
#: every table of ``timeseries/``: name -> column types (``units``: plus its state columns)
SCHEMAS: dict[str, dict[str, pa.DataType]] = {
    "frames": {c: _FRAME_TYPES.get(c, _F) for c in FRAME_COLUMNS},
    "units": UNIT_COLUMNS,
    "bids": {"frame": _INT, "bid_id": _STR, "unit_id": _STR, "volume_mw": _F,
             "price_eur_per_mwh": _F, "activation_mw": _F},
    "setpoints": {"frame": _INT, "unit_id": _STR, "setpoint_mw": _F},
    "voltages": _VM, "loadings": _LD,
    "predictions": {"frame": _INT, "element_id": _INT, "key": _STR, "kind": _STR,
                    "predicted": _F, "ac": _F},
    "all_active_voltages": _VM, "all_active_loadings": _LD,
}
TABLES = tuple(SCHEMAS)
STREAM_SUFFIX = ".arrows"  #: Arrow IPC stream files while running (or after a kill)
#: buffer compression of the stream batches (one batch holds up to FLUSH_FRAMES frames)
STREAM_COMPRESSION = "lz4"   #: LZ4 frame: half the CPU of zstd, nearly its size
_IPC = ipc.IpcWriteOptions(compression=STREAM_COMPRESSION)
STREAM_BUFFER_BYTES = 1 << 20
#: the Recorder writes its buffered frames to the streams (then lists them in frames.csv)
#: every FLUSH_FRAMES recorded frames or when FLUSH_S seconds have passed since the last
#: write, whichever comes first (Recorder params ``flush_frames``, ``flush_s``)
FLUSH_FRAMES = 16
FLUSH_S = 2.0
PARQUET_ROWS = 1 << 18     #: rows per Parquet row group when a stream is converted
PARQUET_COMPRESSION = "zstd"
UNIT_FLAG_COLUMNS = ("frame", "unit_id", "kind", "reason")
#: recorders of this process that have not finished (closed on an interrupt or a crash)
_OPEN: weakref.WeakSet = weakref.WeakSet()
ATTRS_IN = ("clearing", "report", "offers", "accuracy", "Vm[pu]", "loading[%]", "P_slack[MW]",
            "setpoint[MW]", "clipped", "flagged", "units")
META = meta_from_table({"Recorder": {
    "public": True, "params": ["run_dir", "clock", "progress", "tol_vm_mae_pu",
                               "tol_loading_mae_percent", "bid_units", "grid", "warmup",
                               "flush_frames", "flush_s"],
    "attrs": list(ATTRS_IN)}}, sim_type="event-based")
log = logging.getLogger("flexcosim.results")


# --------------------------------------------------------------------------- elements
def element_table(grid: str) -> pd.DataFrame:
    """One row per bus, line and transformer of the co-simulation's grid
    (``flexcore.grid.district_grid.district_net``), the map behind every ``element_id``:

    ``element_id`` (0.. : buses, then lines, then transformers, each in pandapower index
    order), ``kind`` (``bus`` / ``line`` / ``trafo``), ``pp_index`` (the pandapower index),
    ``name``, ``vn_kv`` (buses; a branch: its from / HV side), ``from_element_id`` /
    ``to_element_id`` (branches: the element ids of their end buses, HV / LV side for
    transformers), ``buildings`` (list of building ids connected at the bus, or at either
    end of the branch), ``transformer`` (pandapower index of the transformer supplying the
    element: the one whose LV side the element's island of lines reaches; a transformer
    itself; NA upstream of every transformer) and ``feeder`` (pandapower index of the line
    leaving the transformer's LV busbar towards the element; NA for busbars, transformers
    and the upstream grid)."""
    import networkx as nx
    import pandapower.topology as top

    from flexcore.grid.district_grid import district_net

    net, building_ids = district_net(grid)[:2]
    at_bus: dict[int, list[str]] = {}
    for bid, load in zip(building_ids, _building_loads(net, building_ids)):
        at_bus.setdefault(int(net.load.at[load, "bus"]), []).append(str(bid))
    graph = top.create_nxgraph(net, include_trafos=False, include_trafo3ws=False)
    trafo_of: dict[int, int] = {}
    feeder_of: dict[int, int] = {}
    for t, lv in zip(net.trafo.index, net.trafo.lv_bus):
        lv = int(lv)
        if lv not in graph or lv in trafo_of:
            continue
        for b in nx.node_connected_component(graph, lv):
            trafo_of.setdefault(int(b), int(t))
        rest = graph.copy()
        rest.remove_node(lv)
        for _, nb, key in graph.edges(lv, keys=True):
            if key[0] != "line" or nb in feeder_of:
                continue
            for b in nx.node_connected_component(rest, nb):
                feeder_of.setdefault(int(b), int(key[1]))
    bus_id = {int(b): k for k, b in enumerate(net.bus.index)}
    rows = [{"kind": "bus", "pp_index": int(b), "name": str(net.bus.at[b, "name"]),
             "vn_kv": float(net.bus.at[b, "vn_kv"]), "from_element_id": pd.NA,
             "to_element_id": pd.NA, "buildings": at_bus.get(int(b), []),
             "transformer": trafo_of.get(int(b), pd.NA), "feeder": feeder_of.get(int(b), pd.NA)}
            for b in net.bus.index]
    for kind, a, z in (("line", "from_bus", "to_bus"), ("trafo", "hv_bus", "lv_bus")):
        for i, fb, tb in zip(net[kind].index, net[kind][a], net[kind][z]):
            fb, tb = int(fb), int(tb)
            if kind == "trafo":
                trafo, feeder = int(i), pd.NA
            else:
                trafo = trafo_of.get(fb, trafo_of.get(tb, pd.NA))
                feeder = feeder_of.get(tb, feeder_of.get(fb, pd.NA))
            rows.append({"kind": kind, "pp_index": int(i), "name": str(net[kind].at[i, "name"]),
                         "vn_kv": float(net.bus.at[fb, "vn_kv"]),
                         "from_element_id": bus_id[fb], "to_element_id": bus_id[tb],
                         "buildings": at_bus.get(fb, []) + at_bus.get(tb, []),
                         "transformer": trafo, "feeder": feeder})
    df = pd.DataFrame(rows)
    df.insert(0, "element_id", np.arange(len(df), dtype=np.int64))
    return df.astype({"from_element_id": "Int64", "to_element_id": "Int64",
                      "transformer": "Int64", "feeder": "Int64"})


def _building_loads(net, building_ids) -> list[int]:
    """The load index of each building of ``district_net`` (its load is named by the id)."""
    by_name = {str(n): int(i) for i, n in zip(net.load.index, net.load["name"])
               if net.load.at[i, "in_service"]}
    return [by_name[str(b)] for b in building_ids]


def element_keys(elements: pd.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """The GridSim output keys -> element id: buses (``str(bus index)``) and branches
    (``"line:<i>"`` / ``"trafo:<i>"``, simulators.grid_sim)."""
    bus, branch = {}, {}
    for eid, kind, i in zip(elements["element_id"], elements["kind"], elements["pp_index"]):
        if kind == "bus":
            bus[str(i)] = int(eid)
        else:
            branch[f"{kind}:{i}"] = int(eid)
    return bus, branch


# --------------------------------------------------------------------------- storage
def _column(pieces: list, typ: pa.DataType) -> pa.Array:
    """One column of a batch from the frames' pieces (NumPy arrays, Python lists or Arrow
    arrays): one conversion per flush, not per frame."""
    if len(pieces) == 1 and isinstance(pieces[0], pa.Array):
        return pieces[0]
    if all(isinstance(p, np.ndarray) for p in pieces):
        return pa.array(np.concatenate(pieces), typ)
    if all(isinstance(p, pa.Array) for p in pieces):
        return pa.concat_arrays(pieces)
    if all(isinstance(p, list) for p in pieces):
        return pa.array(list(itertools.chain.from_iterable(pieces)), typ)
    return pa.concat_arrays([p if isinstance(p, pa.Array) else pa.array(p, typ)
                             for p in pieces])


class _Stream:
    """One table being written: an Arrow IPC stream file. :meth:`add` keeps a frame's
    columns in memory; :meth:`flush` writes every frame added since as ONE record batch
    (compressed, :data:`STREAM_COMPRESSION`) and hands it to the operating system at once
    (collected in a buffer, then one ``write``: a kill of the process loses nothing the OS
    got)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self._raw = pa.OSFile(str(path), "wb")
        self._sink = pa.BufferedOutputStream(self._raw, STREAM_BUFFER_BYTES)
        self._writer = ipc.new_stream(self._sink, schema, options=_IPC)
        self._sink.flush()
        self._parts: list[dict] = []
        self._last: dict[str, tuple] = {}

    def add(self, columns: dict) -> None:
        """A frame's columns (one entry per schema field: list, NumPy or Arrow array)."""
        self._parts.append({f.name: self._piece(f, columns[f.name]) for f in self.schema})

    def _piece(self, field: pa.Field, values):
        """Python lists made cheap to concatenate now (Arrow converts long lists of
        Python floats slowly): numbers as NumPy arrays (None -> NaN in float columns),
        strings as Arrow arrays, reused while a column repeats the previous frame's
        (the fleet's unit ids, the bid pseudonyms)."""
        if not isinstance(values, list) or len(values) < 64:   # short: chained at flush
            return values
        t = field.type
        if t == _F:
            return np.array(values, float)
        if (t == _INT or t == _BOOL) and None not in values:
            return np.array(values, t.to_pandas_dtype())
        if t == _STR:
            last = self._last.get(field.name)
            if last is None or last[0] != values:
                last = self._last[field.name] = (list(values), pa.array(values, _STR))
            return last[1]
        return values

    def flush(self) -> None:
        if not self._parts:
            return
        parts, self._parts = self._parts, []
        arrays = [_column([p[f.name] for p in parts], f.type) for f in self.schema]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self._sink.flush()

    def write(self, columns: dict) -> None:
        """One batch of ``columns`` at once."""
        self.add(columns)
        self.flush()

    def close(self) -> None:
        if not self._raw.closed:
            self._writer.close()
            self._sink.close()


def _open_stream(path: Path):
    """(schema, iterator over the complete record batches) of a stream file, read batch by
    batch (never the whole file in memory); a torn tail (a batch cut off by a kill) ends the
    iteration quietly. ``(None, iter(()))`` if not even the schema is complete."""
    src = pa.OSFile(str(path), "rb")
    try:
        reader = ipc.open_stream(src)
    except (pa.ArrowInvalid, OSError):
        src.close()
        return None, iter(())

    def batches():
        with src:
            while True:
                try:
                    yield reader.read_next_batch()
                except StopIteration:
                    return
                except (pa.ArrowInvalid, OSError):  # the batch a kill cut off
                    return

    return reader.schema, batches()


def _stream_to_parquet(src: Path, dst: Path, schema: pa.Schema) -> None:
    """Convert a stream file into a Parquet file batch by batch, in row groups of
    :data:`PARQUET_ROWS` rows (at most one row group in memory, never the whole table),
    through a temporary name, then renamed."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    _, batches = _open_stream(src)
    # dictionary encoding for ids and labels only: on floats it costs time and saves nothing
    coded = [f.name for f in schema if not pa.types.is_floating(f.type)]
    with pq.ParquetWriter(str(tmp), schema, compression=PARQUET_COMPRESSION,
                          use_dictionary=coded) as out:
        buf, n = [], 0
        for batch in batches:
            buf.append(batch)
            n += batch.num_rows
            if n >= PARQUET_ROWS:
                out.write_table(pa.Table.from_batches(buf, schema=schema),
                                row_group_size=PARQUET_ROWS)
                buf, n = [], 0
        if buf:
            out.write_table(pa.Table.from_batches(buf, schema=schema),
                            row_group_size=PARQUET_ROWS)
    os.replace(tmp, dst)


def read_table(run_dir: str | Path, name: str, *, columns: Sequence[str] | None = None,
               frames: Iterable[int] | None = None) -> pd.DataFrame:
    """A table of a run folder as a DataFrame, for finished and for killed runs.

    ``name``: one of :data:`TABLES` (``frames``, ``units``, ``bids``, ``setpoints``,
    ``voltages``, ``loadings``, ``predictions``, ``all_active_voltages``,
    ``all_active_loadings``) or ``elements``. A finished run is read from
    ``timeseries/<name>.parquet``; a killed or interrupted one from
    ``timeseries/<name>.arrows`` (its complete record batches, restricted to the frames of
    the frames stream, so every table holds the same finished frames). InputFileError if
    the run folder has no such table.

    Parts of a large table (a year's unit table): ``columns`` (names, in this order) and
    ``frames`` (the ``frame`` numbers to keep, e.g. ``range(0, 2976)``) are applied while
    reading, row group by row group (Parquet) or batch by batch (streams), so only the part
    asked for is ever in memory."""
    run_dir = Path(run_dir)
    if name == "elements":
        path = run_dir / "elements.parquet"
        if not path.is_file():
            raise InputFileError(f"{run_dir}: no elements.parquet")
        return pd.read_parquet(path, columns=None if columns is None else list(columns))
    if name not in SCHEMAS:
        raise ValueError(f"unknown table {name!r}; tables: {['elements', *TABLES]}")
    wanted = None if frames is None else pa.array(sorted({int(k) for k in frames}), _INT)
    ts = run_dir / "timeseries"
    if (ts / f"{name}.parquet").is_file():
        return _read_parquet_part(ts / f"{name}.parquet", name, columns, wanted)
    stream = ts / f"{name}{STREAM_SUFFIX}"
    if not stream.is_file():
        if (ts / name).is_dir():  # run folders of earlier versions: Parquet parts
            return pd.read_parquet(ts / name, columns=columns)
        raise InputFileError(f"{run_dir}: no table {name!r} (timeseries/{name}.parquet or "
                             f"{name}{STREAM_SUFFIX})")
    schema, batches = _open_stream(stream)
    if schema is None:
        schema = _schema(name, ())
    cols = _check_columns(name, columns, schema.names) or schema.names
    if name != "frames":  # only frames whose row was written (none without a frames stream)
        fs = ts / f"frames{STREAM_SUFFIX}"
        done = pa.concat_arrays([pa.array([], _INT)] + (
            [b.column(0) for b in _open_stream(fs)[1]] if fs.is_file() else []))
        wanted = done if wanted is None else pc.filter(wanted, pc.is_in(wanted, done))
    kept = []
    for b in batches:
        if wanted is not None:
            b = b.filter(pc.is_in(b.column("frame"), value_set=wanted))
        kept.append(b.select(cols))
    out = pa.Table.from_batches(kept, schema=pa.schema([schema.field(c) for c in cols]))
    return out.to_pandas()


def _read_parquet_part(path: Path, name: str, columns, wanted: pa.Array | None
                       ) -> pd.DataFrame:
    """``columns`` of the rows of the ``wanted`` frames of a Parquet table: only the row
    groups whose ``frame`` statistics can hold them are read."""
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    cols = _check_columns(name, columns, schema.names) or schema.names
    if wanted is None:
        return pf.read(columns=cols).to_pandas()
    lo, hi = (wanted[0].as_py(), wanted[-1].as_py()) if len(wanted) else (1, 0)
    pos = schema.get_field_index("frame")
    groups = []
    for i in range(pf.num_row_groups):
        st = pf.metadata.row_group(i).column(pos).statistics
        if st is None or not st.has_min_max or (st.min <= hi and st.max >= lo):
            groups.append(i)
    if not groups:
        return schema.empty_table().select(cols).to_pandas()
    table = pf.read_row_groups(groups, columns=list(dict.fromkeys([*cols, "frame"])))
    table = table.filter(pc.is_in(table.column("frame"), value_set=wanted))
    return table.select(cols).to_pandas()


def _check_columns(name: str, columns, names: list[str]) -> list[str] | None:
    if columns is None:
        return None
    bad = [c for c in columns if c not in names]
    if bad:
        raise ValueError(f"table {name!r} has no column(s) {bad}; columns: {names}")
    return list(columns)


def _schema(name: str, state_keys) -> pa.Schema:
    cols = dict(SCHEMAS[name])
    if name == "units":
        cols |= {f"state_{k}": _F for k in state_keys}
    return pa.schema(list(cols.items()))


# --------------------------------------------------------------------------- recorder
class Recorder(FrameSimulator):
    """The run's tables (see the module docstring). Each finished frame's rows are kept in
    memory and written to the streams every ``flush_frames`` frames or ``flush_s``
    seconds (one record batch per table and write), then the frames' rows are appended to
    ``frames.csv``; a kill loses only frames not yet listed there."""

    def __init__(self) -> None:
        super().__init__(META)
        self._pending: dict[int, dict] = {}
        self._streams: dict[str, _Stream] = {}
        self._state_keys: tuple[str, ...] | None = None
        self._keymap = None
        self._csv_rows: list[dict] = []
        self._flag_rows: list[tuple] = []
        self._key_order: dict[str, tuple] = {}
        self._bids: tuple = (None, [], {})
        self.n_recorded = 0

    def create(self, num, model, *, run_dir: str, clock: dict, progress: bool = False,
               tol_vm_mae_pu: float = math.inf, tol_loading_mae_percent: float = math.inf,
               bid_units: dict[str, dict] | None = None, grid: str | None = None,
               warmup: list[int] | None = None, flush_frames: int = FLUSH_FRAMES,
               flush_s: float = FLUSH_S):
        self.run_dir = Path(run_dir)
        self.flush_frames, self.flush_s = max(1, int(flush_frames)), float(flush_s)
        self._units = dict(bid_units or {})
        self._unit_by_bid = {b: str(e["unit_id"]) for b, e in self._units.items()}
        self._unit_order = {u: k for k, u in enumerate(dict.fromkeys(self._unit_by_bid.values()))}
        if self._units:
            write_json(self.run_dir / "dso" / "bid_pseudonyms.json", self._units)
        self.dir = self.run_dir / "timeseries"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clock = FrameClock.of(clock)
        self._tz = self.clock.frames[0].timestamp.tz
        skip = {int(k) for k in (warmup or ())}
        self._frame_no = {k: r for r, k in enumerate(
            k for k in range(len(self.clock)) if k not in skip)}
        self.tol_vm_mae_pu = float(tol_vm_mae_pu)
        self.tol_loading_mae_percent = float(tol_loading_mae_percent)
        self._elements = None
        if grid is not None:
            self._elements = element_table(grid)
            self._elements.to_parquet(self.run_dir / "elements.parquet", index=False)
            self._bus_pos, self._branch_pos = element_keys(self._elements)
            kinds = self._elements["kind"].to_numpy()
            self._bus_ids = self._elements["element_id"].to_numpy()[kinds == "bus"]
            self._branch_ids = self._elements["element_id"].to_numpy()[kinds != "bus"]
            first_branch = int(self._branch_ids[0]) if len(self._branch_ids) else 0
            self._branch_pos = {k: e - first_branch for k, e in self._branch_pos.items()}
        self._csv = (self.dir / "frames.csv").open("w", newline="")
        self._writer = csv.DictWriter(self._csv, FRAME_COLUMNS, extrasaction="ignore")
        self._writer.writeheader()
        self._csv.flush()
        self._flags_csv = (self.dir / "unit_flags.csv").open("w", newline="")
        self._flags = csv.writer(self._flags_csv)
        self._flags.writerow(UNIT_FLAG_COLUMNS)
        self._flags_csv.flush()
        _OPEN.add(self)
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.clock), unit="frame", desc="frames")
        self._t_last = self._t_written = _time.perf_counter()
        self.write_time_s = 0.0   # time spent recording (overhead), for benchmarks
        return [{"eid": "Recorder", "type": model}]

    def step(self, time, inputs, max_advance):
        for t in sorted(k for k in self._pending if k < time):
            self._record(t)
        rec = self._pending.setdefault(time, {})
        for attr, values in inputs.get("Recorder", {}).items():
            for v in values.values():
                rec[attr] = v
        return None

    # ------------------------------------------------------------------ one frame
    def _write(self, name: str, columns: dict) -> None:
        """Add a frame's columns to a table (written at the next :meth:`_write_out`)."""
        stream = self._streams.get(name)
        if stream is None:
            keys = self._state_keys or ()
            stream = self._streams[name] = _Stream(self.dir / f"{name}{STREAM_SUFFIX}",
                                                   _schema(name, keys))
        stream.add(columns)

    def _write_out(self) -> None:
        """Every buffered frame to disk: each table's batch first, the frames table's last
        (``frames.arrows``, then ``unit_flags.csv`` and ``frames.csv``, flushed), so a
        frame listed in ``frames.csv`` has all its rows on disk."""
        t_in = _time.perf_counter()
        for name, stream in self._streams.items():
            if name != "frames":
                stream.flush()
        if "frames" in self._streams:
            self._streams["frames"].flush()
        self._flags.writerows(self._flag_rows)
        self._flags_csv.flush()
        self._writer.writerows(self._csv_rows)
        self._csv.flush()
        self._flag_rows, self._csv_rows = [], []
        self._t_written = now = _time.perf_counter()
        self.write_time_s += now - t_in

    def _record(self, time: int) -> None:
        """A finished frame's rows into the buffers; written every ``flush_frames``
        frames or ``flush_s`` seconds."""
        rec = self._pending.pop(time)
        t_in = _time.perf_counter()
        k = self.clock.index_at(time)
        if self._bar is not None:
            self._bar.update(1)
        if k not in self._frame_no:  # a warm-up frame: computed, not recorded
            self._t_last = _time.perf_counter()
            return
        n = self._frame_no[k]
        frame = self.clock.frames[k]
        c, r, a = rec.get("clearing", {}), rec.get("report", {}), rec.get("accuracy", {})
        offers = rec.get("offers", [])
        act = c.get("activation_mw", {})
        flagged, clipped = rec.get("flagged", {}), rec.get("clipped", {})
        above = self._above_tolerance(c, a)
        unit = self._unit_by_bid.get
        bid_ids = [o["bid_id"] for o in offers]
        if bid_ids != self._bids[0]:   # the offers' bids change rarely: mapped once
            self._bids = (bid_ids, [unit(b, b) for b in bid_ids],
                          {b: i for i, b in enumerate(bid_ids)})
        bid_ids, bid_units, bid_pos = self._bids
        volumes = np.fromiter((o["volume_mw"] for o in offers), float, len(offers))
        activation = np.zeros(len(offers))
        for b, x in act.items():
            if b in bid_pos:
                activation[bid_pos[b]] = x
        self._write("bids", {
            "frame": np.full(len(offers), n), "bid_id": bid_ids, "unit_id": bid_units,
            "volume_mw": volumes, "price_eur_per_mwh": np.fromiter(
                (o["price_eur_per_mwh"] for o in offers), float, len(offers)),
            "activation_mw": activation})
        per_unit: dict[str, float] = {}  # the sum of each unit's bids, as FPUSim dispatches
        for b, x in rec.get("setpoint[MW]", {}).items():
            u = unit(b, b)
            per_unit[u] = per_unit.get(u, 0.0) + x
        if len(per_unit) > 1:  # rows in the fleet's unit order, not the pseudonyms' (per run)
            last = len(self._unit_order)
            per_unit = dict(sorted(per_unit.items(),
                                   key=lambda kv: (self._unit_order.get(kv[0], last), kv[0])))
        self._write("setpoints", {"frame": np.full(len(per_unit), n),
                                  "unit_id": list(per_unit),
                                  "setpoint_mw": list(per_unit.values())})
        if "units" in rec:
            self._write_units(n, rec["units"])
        vm, ld = rec.get("Vm[pu]", {}), rec.get("loading[%]", {})
        extremes = self._write_state(n, vm, ld, "")
        # format 2: the TSO's clearing has no predictions, the DSO report carries its own
        pv = c.get("predicted_vm_pu") or r.get("predicted_vm_pu") or {}
        pl = c.get("predicted_loading_percent") or r.get("predicted_loading_percent") or {}
        if c.get("dispatched") and (pv or pl):
            self._write("predictions", self._prediction_columns(n, pv, pl, vm, ld))
        aa = r.get("all_active")
        if aa:  # AC state with every bid in the request's direction active (DSO report)
            self._write_state(n, aa.get("Vm[pu]", {}), aa.get("loading[%]", {}), "all_active_")
        stamp = frame.start.tz_localize(self._tz)   # = frame.timestamp, zone looked up once
        row = {"frame": n, "day_type": frame.day_type, "slot": frame.slot,
               "timestamp": stamp,
               **{x: c.get(x) for x in ("status", "dispatched", "request_mw", "delivered_mw",
                                         "operating_point", "rounds", "build_time_s",
                                         "solve_time_s")},
               "cost_eur_per_h": c.get("cost_eur_per_h"),
               "message": frame_message(c, r, a, above=above, flagged=flagged),
               "above_tolerance": bool(above),
               **{x: r.get(x) for x in ("relinearized", "fix_moved_mw", "points", "dso_time_s")},
               **a, **extremes, "p_slack_mw": rec.get("P_slack[MW]", math.nan),
               "n_offers": len(offers),
               "offered_up_mw": float(volumes[volumes > 0].sum()),
               "offered_down_mw": float(volumes[volumes < 0].sum()),
               "clipped_units": len(clipped), "flagged_units": len(flagged)}
        now = _time.perf_counter()
        row["wall_time_s"] = now - self._t_last
        self._t_last = now
        self._write("frames", {col: [row.get(col)] for col in FRAME_COLUMNS})
        for kind, units in (("flagged", flagged), ("clipped", clipped)):
            self._flag_rows += [(n, u, kind, why) for u, why in sorted(units.items())]
        self._csv_rows.append(row | {"timestamp": stamp.isoformat()})
        self.n_recorded += 1
        self.write_time_s += _time.perf_counter() - t_in
        if (len(self._csv_rows) >= self.flush_frames
                or now - self._t_written >= self.flush_s):
            self._write_out()

    def _write_units(self, n: int, units: dict) -> None:
        """The fleet's per-unit record of the frame (simulators.fpu_sim ``units``: columns
        of equal length, ``state``: key -> values) as the frame's part of the unit table."""
        state = units.get("state", {})
        if self._state_keys is None:  # the first recorded frame fixes the state columns
            self._state_keys = tuple(sorted(state))
        extra = sorted(set(state) - set(self._state_keys))
        if extra and not getattr(self, "_warned_state", False):
            log.warning("unit state key(s) %s appeared after the first frame: not recorded",
                        extra)
            self._warned_state = True
        m = len(units.get("unit_id", ()))
        cols = {c: _listed(units.get(c, [None] * m)) for c in UNIT_COLUMNS if c != "frame"}
        cols["frame"] = np.full(m, n)
        for key in self._state_keys:
            cols[f"state_{key}"] = _listed(state.get(key, [None] * m))
        self._write("units", cols)

    def _positions(self, name: str, keys: dict, pos: dict) -> np.ndarray:
        """Positions of a GridSim dict's keys (in its order) in the element table, looked
        up once while the keys stay the same."""
        order = tuple(keys)
        got = self._key_order.get(name)
        if got is None or got[0] != order:
            got = self._key_order[name] = (order, np.array([pos[x] for x in order], np.intp))
        return got[1]

    def _write_state(self, n: int, vm: dict, ld: dict, prefix: str) -> dict:
        """A frame's AC state (GridSim keys) as the long voltage / loading tables, one row
        per element (NaN where there is no value); returns the frame's extremes."""
        if self._elements is None:
            return {}
        v = np.full(len(self._bus_ids), np.nan)
        v[self._positions(f"{prefix}vm", vm, self._bus_pos)] = np.fromiter(
            vm.values(), float, len(vm))
        lp = np.full(len(self._branch_ids), np.nan)
        lp[self._positions(f"{prefix}ld", ld, self._branch_pos)] = np.fromiter(
            ld.values(), float, len(ld))
        self._write(f"{prefix}voltages", {"frame": np.full(len(v), n), "element_id":
                                          self._bus_ids, "vm_pu": v})
        self._write(f"{prefix}loadings", {"frame": np.full(len(lp), n), "element_id":
                                          self._branch_ids, "loading_percent": lp})
        ok_v, ok_l = v[np.isfinite(v)], np.abs(lp[np.isfinite(lp)])
        return {"vm_min_pu": float(ok_v.min()) if len(ok_v) else math.nan,
                "vm_max_pu": float(ok_v.max()) if len(ok_v) else math.nan,
                "loading_max_percent": float(ok_l.max()) if len(ok_l) else math.nan}

    def _above_tolerance(self, c: dict, a: dict) -> str:
        """Message if a dispatched frame's AC accuracy ends above the tolerance, else ""."""
        if not c.get("dispatched"):
            return ""
        out = []
        for col, tol, unit in (("vm_mae_pu", self.tol_vm_mae_pu, "p.u."),
                               ("loading_mae_percent", self.tol_loading_mae_percent, "%")):
            x = a.get(col)
            if x is not None and math.isfinite(float(x)) and float(x) > tol:
                out.append(f"{col.rsplit('_', 1)[0].replace('_', ' ')} {float(x):.2e} {unit} > "
                           f"tolerance {tol:.2e}")
        return ("dispatched above the accuracy tolerance: " + ", ".join(out)) if out else ""

    def _prediction_columns(self, n: int, pv: dict, pl: dict, vm: dict, ld: dict) -> dict:
        """The TSO's predictions next to the AC result, keys mapped through the DSO's
        KeyMap (``dso/KEYMAP.json``, written at the DSO agent's create, loaded once here)
        to element ids; rows ordered by element id."""
        if self._keymap is None:
            from flexcore.dso.linearizer import KeyMap

            self._keymap = KeyMap.load(self.run_dir / "dso" / "KEYMAP.json")
        km, nan = self._keymap, math.nan
        bus_id = self._bus_id_of
        rows = []
        for key, x in pv.items():
            b = str(km.vm_pu[key])
            rows.append((bus_id(b), key, "vm_pu", x, vm.get(b, nan)))
        for key, x in pl.items():
            e, i = km.loading_percent[key]
            br = f"{e}:{i}"
            rows.append((self._branch_id_of(br), key, "loading_percent", x, ld.get(br, nan)))
        rows.sort(key=lambda t: t[0])
        return {"frame": [n] * len(rows), "element_id": [t[0] for t in rows],
                "key": [t[1] for t in rows], "kind": [t[2] for t in rows],
                "predicted": [t[3] for t in rows], "ac": [t[4] for t in rows]}

    def _bus_id_of(self, key: str) -> int:
        return int(self._bus_ids[self._bus_pos[key]])

    def _branch_id_of(self, key: str) -> int:
        return int(self._branch_ids[self._branch_pos[key]])

    # ------------------------------------------------------------------ the end
    def _close_files(self) -> None:
        _OPEN.discard(self)
        self._closed = True
        for s in self._streams.values():
            s.close()
        self._csv.close()
        self._flags_csv.close()
        if self._bar is not None:
            self._bar.close()

    def close_on_error(self) -> None:
        """After an interrupt or a crash: the buffered finished frames written, the streams
        closed as they are (every finished frame is in them; :func:`read_table` reads
        them); the ``finalize`` that mosaik's shutdown calls next then writes nothing."""
        if getattr(self, "_closed", False):
            return
        try:
            self._write_out()
        finally:
            self._close_files()

    def finalize(self) -> None:
        """The normal end: every stream converted to ``timeseries/<table>.parquet`` (tables
        without rows as empty Parquet files with their columns), the streams removed."""
        if getattr(self, "_closed", False):
            return
        for t in sorted(self._pending):
            self._record(t)
        self._write_out()
        self._close_files()
        if self.n_recorded:
            log.info("recorded %d frames, %.2f ms per frame", self.n_recorded,
                     1e3 * self.write_time_s / self.n_recorded)
        for name in TABLES:
            stream = self._streams.get(name)
            dst = self.dir / f"{name}.parquet"
            if stream is None:
                pq.write_table(_schema(name, self._state_keys or ()).empty_table(), dst)
                continue
            _stream_to_parquet(stream.path, dst, stream.schema)
            stream.path.unlink()


def _listed(values):
    """A column piece as the stream buffers it: NumPy arrays and lists as they are, other
    sequences as lists."""
    return values if isinstance(values, (list, np.ndarray, pa.Array)) else list(values)


def frame_message(c: dict, r: dict, a: dict, *, above: str = "", flagged: dict | None = None
                  ) -> str:
    """Why a frame is what it is: non-empty for every frame that is not optimal and
    dispatched (no clearing record, no request, unsafe after N rounds, infeasible, ...),
    plus notes that apply to any frame (accuracy above tolerance, flagged units, AC power
    flow not converged, the DSO's or the clearing's own message)."""
    status, dispatched = c.get("status"), bool(c.get("dispatched"))
    request = c.get("request_mw")
    own = c.get("message") or r.get("message", "")
    notes = []
    if not c:
        notes.append("no clearing record for this frame")
    elif status == "optimal" and dispatched:
        if request is not None and float(request) == 0.0 and not own:
            notes.append("no request")
    elif status == "unsafe":
        what = "dispatched anyway (dispatch_unsafe)" if dispatched else "not dispatched"
        notes.append(f"unsafe in AC after {c.get('rounds', 0)} refinement round(s): {what}")
    elif request is not None and float(request) == 0.0 and status == "optimal":
        notes.append("no request")
    else:
        notes.append(f"{status}: not dispatched" if not dispatched else f"{status}: dispatched")
    if own:
        notes.append(own)
    if above:
        notes.append(above)
    if a and a.get("ac_converged") is False:
        notes.append("AC power flow did not converge")
    if flagged:
        shown = "; ".join(f"{u} ({why})" for u, why in sorted(flagged.items())[:3])
        more = f" and {len(flagged) - 3} more" if len(flagged) > 3 else ""
        notes.append(f"{len(flagged)} unit(s) flagged and kept at baseline: {shown}{more}")
    return "; ".join(notes)


def close_open_recorders() -> None:
    """Close every unfinished Recorder of this process (the runner calls it when a run is
    interrupted or crashes): the finished frames stay readable with :func:`read_table`."""
    for rec in list(_OPEN):
        rec.close_on_error()


# --------------------------------------------------------------------------- summary
def summarize(frames: pd.DataFrame, *, wall_time_s: float, frame_h: float,
              unit_flags: pd.DataFrame | None = None) -> dict:
    """Run summary: energy, cost, statuses and accuracy statistics (median/p95/max).

    ``frame_h`` is the clock's frame length in hours (``FrameClock.frame_h``): energy in
    MWh = sum of frame-mean MW x ``frame_h``, cost in EUR = sum of EUR/h x ``frame_h``.
    ``unit_flags``: the run's ``timeseries/unit_flags.csv`` (flagged and clipped units)."""
    ok = frames["status"] == "optimal"
    req = frames["request_mw"].astype(float)
    dlv = frames["delivered_mw"].astype(float).fillna(0.0)

    def stats(col: str) -> dict:
        x = frames.loc[ok, col].astype(float).dropna()
        if x.empty:
            return {"median": math.nan, "p95": math.nan, "max": math.nan}
        return {"median": float(x.median()), "p95": float(x.quantile(0.95)), "max": float(x.max())}

    def count(col: str) -> int:
        return int(sum(bool(x) for x in frames[col] if pd.notna(x))) if col in frames else 0

    flags = unit_flags if unit_flags is not None else pd.DataFrame(
        columns=list(UNIT_FLAG_COLUMNS))
    flagged = flags[flags["kind"] == "flagged"]
    first = flagged.drop_duplicates("unit_id")
    return {
        "frames": int(len(frames)),
        "frames_cleared_optimal": int(ok.sum()),
        "frames_with_request": int((frames["request_mw"].abs() > 0).sum()),
        "infeasible_frames": int((frames["status"] == "infeasible").sum()),
        "unsafe_frames": int((frames["status"] == "unsafe").sum()),
        "nonconverged_ac_frames": int((~frames["ac_converged"].astype(bool)).sum()),
        "ac_violation_frames": int((frames["ac_violations"].fillna(0) > 0).sum()),
        # per direction: a signed sum would let upward and downward energy cancel
        "requested_up_mwh": float(req.clip(lower=0).sum() * frame_h),
        "requested_down_mwh": float(req.clip(upper=0).abs().sum() * frame_h),
        "delivered_up_mwh": float(dlv.clip(lower=0).sum() * frame_h),
        "delivered_down_mwh": float(dlv.clip(upper=0).abs().sum() * frame_h),
        "cost_eur": float(frames["cost_eur_per_h"].fillna(0).sum() * frame_h),
        "vm_mae_pu": stats("vm_mae_pu"),
        "loading_mae_percent": stats("loading_mae_percent"),
        "frames_above_tolerance": count("above_tolerance"),
        "flagged_units": int(first["unit_id"].nunique()),
        "flagged_unit_frames": int(len(flagged)),
        "flagged_frames": count("flagged_units"),
        "flagged_examples": [f"{u} ({why})" for u, why in
                             zip(first["unit_id"][:3], first["reason"][:3])],
        "clipped_units": int(flags.loc[flags["kind"] == "clipped", "unit_id"].nunique()),
        "clipped_unit_frames": int((flags["kind"] == "clipped").sum()),
        "wall_time_s": float(wall_time_s),
        "frames_per_s": float(len(frames) / wall_time_s) if wall_time_s > 0 else math.nan,
    }


def summary_text(s: dict) -> str:
    rows = [
        ("frames (optimal / with request)",
         f"{s['frames']} ({s['frames_cleared_optimal']} / {s['frames_with_request']})"),
        ("requested / delivered upward", f"{s['requested_up_mwh']:.3f} / "
                                          f"{s['delivered_up_mwh']:.3f} MWh"),
        ("requested / delivered downward", f"{s['requested_down_mwh']:.3f} / "
                                            f"{s['delivered_down_mwh']:.3f} MWh"),
        ("cost", f"{s['cost_eur']:.2f} EUR"),
        ("infeasible / unsafe / AC not converged",
         f"{s['infeasible_frames']} / {s['unsafe_frames']} / {s['nonconverged_ac_frames']}"),
        ("frames with AC limit violations", str(s["ac_violation_frames"])),
        ("voltage MAE p.u. median/p95/max",
         "{median:.2e} / {p95:.2e} / {max:.2e}".format(**s["vm_mae_pu"])),
        ("loading MAE % median/p95/max",
         "{median:.2e} / {p95:.2e} / {max:.2e}".format(**s["loading_mae_percent"])),
        ("frames dispatched above accuracy tol.", str(s.get("frames_above_tolerance", 0))),
        ("units flagged (contract) / frames", f"{s.get('flagged_units', 0)} / "
                                              f"{s.get('flagged_frames', 0)}"),
        ("units clipped / unit-frames", f"{s.get('clipped_units', 0)} / "
                                        f"{s.get('clipped_unit_frames', 0)}"),
        ("warm-up frames (run, not recorded)", str(s.get("warmup_frames", 0))),
        ("wall time", f"{s['wall_time_s']:.1f} s ({s['frames_per_s']:.2f} frames/s)"),
    ]
    rows[-1:-1] = [("  flagged", x) for x in s.get("flagged_examples", [])]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def write_summary(run_dir: Path, frames: pd.DataFrame, summary: dict) -> None:
    frames.assign(timestamp=[t.isoformat() for t in frames["timestamp"]]).to_csv(
        run_dir / "frames.csv", index=False)
    flat = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    for k in ("vm_mae_pu", "loading_mae_percent"):
        for q, x in summary[k].items():
            flat[f"{k}_{q}"] = x
    pd.DataFrame([flat]).to_csv(run_dir / "summary.csv", index=False)
    write_json(run_dir / "summary.json", summary)


def write_plots(run_dir: Path, frames: pd.DataFrame, cfg) -> list[Path]:
    """The run's figures in ``plots/``; returns the paths written.

    * ``over_time.png``: request and delivered power, voltage extremes, highest loading,
      voltage / loading MAE and cost over the clock time of each day type;
    * ``grid_max_loading.png``: the AC grid state at the frame with the highest branch loading
      (the largest-request frame is Figure 6's critical frame, not drawn twice);
    * the single-frame figures of the source at the critical frame (:func:`critical_frame`):
      ``fig5_all_active.png`` (every bid in the request's direction fully activated, from
      the DSO report's ``all_active``; skipped with a log line if that frame has none),
      ``fig6_after_clearing.png`` (AC state after clearing, same colour scale as Figure 5),
      ``fig7_pf_vs_prediction_vm.png`` and ``fig8_pf_vs_prediction_loading.png`` (TSO
      prediction vs AC power flow at the critical buses and branches; need a dispatched frame).

    ``flexcosim evaluate`` draws Figures 5-8 for its stand-alone single-frame study as well."""
    import matplotlib

    matplotlib.use("Agg")
    from flexcore.study.plotting import plot_over_time

    out = Path(run_dir) / "plots"
    out.mkdir(exist_ok=True)
    paths = [plot_over_time(frames, out / "over_time.png", limits=cfg.dso.limits)]
    return (paths + grid_state_plots(run_dir, frames, grid=cfg.grid)
            + critical_frame_plots(run_dir, frames, cfg))


def element_values(table: pd.DataFrame, frame: int, elements: pd.DataFrame) -> pd.DataFrame:
    """One frame of a long voltage / loading table joined with the element table: columns
    ``element_id``, the table's value column, ``kind`` and ``pp_index``."""
    rows = table[table["frame"] == frame].drop(columns="frame")
    return rows.merge(elements[["element_id", "kind", "pp_index"]], on="element_id",
                      how="left", validate="one_to_one")


def _set_state(net, vm: pd.DataFrame, ld: pd.DataFrame) -> None:
    """Put a stored AC state (one frame of the long voltage / loading tables joined with
    the element table, :func:`element_values`) into ``net.res_*`` for
    :func:`flexcore.study.plotting.plot_grid` (loading magnitudes)."""
    bus = vm.set_index("pp_index")["vm_pu"].astype(float)
    net.res_bus = pd.DataFrame({"vm_pu": bus.reindex(net.bus.index).to_numpy()},
                               index=net.bus.index)
    for e in ("line", "trafo"):
        idx = net[e].index
        x = ld[ld["kind"] == e].set_index("pp_index")["loading_percent"].astype(float).abs()
        net[f"res_{e}"] = pd.DataFrame({"loading_percent": x.reindex(idx).to_numpy()},
                                       index=idx)


def grid_state_plots(run_dir: Path, frames: pd.DataFrame, *, grid: str) -> list[Path]:
    """The grid's AC state (from the stored time series) at the frame with the highest
    branch loading (Figure 6 style)."""
    from flexcore.grid.grids import load_grid
    from flexcore.study.plotting import plot_grid

    vm, ld = read_table(run_dir, "voltages"), read_table(run_dir, "loadings")
    elements = read_table(run_dir, "elements")
    net = load_grid(grid)
    picks = {}
    if ld["loading_percent"].notna().any():
        picks["max_loading"] = int(ld.loc[ld["loading_percent"].abs().idxmax(), "frame"])
    paths = []
    for name, frame in picks.items():
        v, lp = element_values(vm, frame, elements), element_values(ld, frame, elements)
        if v.empty or lp.empty:
            continue
        row = frames.loc[frames["frame"] == frame].iloc[0]
        _set_state(net, v, lp)
        title = (f"frame {frame} ({row['day_type']}, slot {row['slot']}): request "
                 f"{row['request_mw']:g} MW, {row['status']}")
        paths.append(plot_grid(net, Path(run_dir) / "plots" / f"grid_{name}.png", title=title))
    return paths


def _num(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def critical_frame(frames: pd.DataFrame) -> int | None:
    """The dispatched frame with the largest |request|; without one, the frame with the
    largest |request| whatever its status; None if no frame has a request."""
    req = frames["request_mw"].astype(float).abs()
    pool = frames[(req > 0) & frames["dispatched"].eq(True)]
    if pool.empty:
        pool = frames[req > 0]
    if pool.empty:
        return None
    return int(pool.loc[pool["request_mw"].astype(float).abs().idxmax(), "frame"])


def critical_frame_plots(run_dir: Path, frames: pd.DataFrame, cfg, *, n: int = 20
                         ) -> list[Path]:
    """Figures 5-8 of the source at :func:`critical_frame` (see :func:`write_plots`).

    Figure 7 shows the ``n`` predicted buses closest to a voltage limit in AC, Figure 8 the
    ``n`` most loaded predicted branches (magnitudes, as the Validator compares them); both
    with the error per element in a lower panel."""
    import numpy as np

    from flexcore.grid.grids import load_grid
    from flexcore.study.plotting import plot_grid, plot_pf_vs_prediction

    run_dir = Path(run_dir)
    out = run_dir / "plots"
    frame = critical_frame(frames)
    if frame is None:
        log.warning("Figures 5-8 skipped: no frame has a balancing request")
        return []
    row = frames.loc[frames["frame"] == frame].iloc[0]
    minutes = int(row["slot"]) * int(cfg.resolution_min)
    where = (f"frame {frame}: {row['day_type']}, slot {row['slot']} "
             f"({minutes // 60:02d}:{minutes % 60:02d}), request {_num(row['request_mw'])} MW")
    lim = cfg.dso.limits
    paths = []

    def read(name: str) -> pd.DataFrame | None:
        try:
            return read_table(run_dir, name)
        except InputFileError:
            return None

    elements = read_table(run_dir, "elements")
    net = load_grid(cfg.grid)
    states = {"fig5_all_active": ("Figure 5: all flexibility active", "all_active_voltages",
                                  "all_active_loadings"),
              "fig6_after_clearing": (f"Figure 6: after clearing ({row['status']}, delivered "
                                      f"{_num(row['delivered_mw'])} MW)", "voltages",
                                      "loadings")}
    for name, (head, f_vm, f_ld) in states.items():
        vm, ld = read(f_vm), read(f_ld)
        v = None if vm is None else element_values(vm, frame, elements)
        lp = None if ld is None else element_values(ld, frame, elements)
        if v is None or lp is None or v.empty or lp.empty:
            why = (f"{f_vm} / {f_ld} missing" if vm is None or ld is None
                   else f"no stored AC state for frame {frame} in {f_vm}" if len(vm)
                   else f"no frame's DSO report carries 'all_active' ({f_vm} is empty)")
            log.warning("%s.png skipped: %s", name, why)
            continue
        title = (f"{head}\n{where}\nmax loading {lp['loading_percent'].abs().max():.1f} %, "
                 f"voltage {v['vm_pu'].min():.4f}-{v['vm_pu'].max():.4f} p.u.")
        _set_state(net, v, lp)
        paths.append(plot_grid(net, out / f"{name}.png", title=title,
                               limit_percent=lim["loading_max_percent"],
                               vm_limits=(lim["vm_min_pu"], lim["vm_max_pu"])))
    pred = read("predictions")
    pred = None if pred is None else pred[pred["frame"] == frame].merge(
        elements[["element_id", "kind", "pp_index"]].rename(columns={"kind": "element"}),
        on="element_id", how="left")
    if pred is None or pred.empty:
        log.warning("Figures 7/8 skipped: %s", "predictions table missing" if pred is None
                    else f"no predictions for frame {frame} (not dispatched)")
        return paths
    v = pred[(pred["kind"] == "vm_pu") & pred["ac"].notna()]
    if len(v):
        margin = np.minimum(v["ac"] - lim["vm_min_pu"], lim["vm_max_pu"] - v["ac"]).to_numpy()
        sel = v.iloc[np.argsort(margin, kind="stable")[:n]]
        near = [x for x in (lim["vm_min_pu"], lim["vm_max_pu"])
                if (sel["ac"] - x).abs().min() < 0.02]  # limit lines only where they are near
        mae = (v["predicted"] - v["ac"]).abs().mean()
        paths.append(plot_pf_vs_prediction(
            [f"bus {i}" for i in sel["pp_index"]], sel["ac"], sel["predicted"],
            out / "fig7_pf_vs_prediction_vm.png", ylabel="voltage (p.u.)", limits=near,
            errors=True,
            title=(f"Figure 7: TSO estimate vs AC, {len(sel)} buses closest to a voltage limit\n"
                   f"{where}; MAE over {len(v)} predicted buses {mae:.2e} p.u.")))
    b = pred[(pred["kind"] == "loading_percent") & pred["ac"].notna()]
    if len(b):
        ac, pr = b["ac"].abs(), b["predicted"].abs()
        order = np.argsort(-ac.to_numpy(), kind="stable")[:n]
        sel = b.iloc[order]
        mae = (pr - ac).abs().mean()
        paths.append(plot_pf_vs_prediction(
            [f"{e} {i}" for e, i in zip(sel["element"], sel["pp_index"])], ac.iloc[order],
            pr.iloc[order], out / "fig8_pf_vs_prediction_loading.png", ylabel="loading (%)",
            limits=(lim["loading_max_percent"],), errors=True,
            title=(f"Figure 8: TSO estimate vs AC, {len(sel)} most loaded branches "
                   f"(magnitudes)\n{where}; MAE over {len(b)} predicted branches "
                   f"{mae:.2e} %")))
    return paths
