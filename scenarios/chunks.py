"""Chunked calendar runs: one span of real dates in K consecutive chunks run in parallel
processes, merged into one ordinary run folder (README "Calendar runs").

``[calendar] chunks = K`` (or ``flexcosim run --calendar 2025 --chunks K``) splits the span
at midnights into K consecutive date ranges with about equal work, warm-up included
(:func:`plan_chunks`). Each chunk is an ordinary calendar run of its own in a worker
process (the sweep's executor, :func:`scenarios.sweep.run_tasks`), written to
``<run>/chunks/<k>/``. Every chunk but the first starts ``[calendar] warmup_days`` W days
earlier (never before the span's start): those frames are computed like any other (the
units charge, drive and heat as in a sequential run) and dropped when the chunks are merged,
so the chunk's units start near the state a sequential run would carry into its first date.
What a chunk cannot carry over (the exact unit states, the DSO's last linearisation) makes
its first frames differ slightly from the sequential run's; the exogenous loads and PV are
the same (README: the measured difference).

The merge (:func:`merge_chunks`) writes the run folder a sequential run would write: every
table in ``timeseries/<table>.parquet`` with the frames of all chunks in date order and
``frame`` numbered over the whole span (the frame numbers of a sequential run), row group by
row group (never a whole table in memory); ``unit_flags.csv``, ``elements.parquet``,
``dso/bid_pseudonyms.json`` (the pseudonyms of every chunk: each chunk is a run with its own),
``frames.csv``, ``summary.json`` (totals over all frames, plus ``chunks``, ``warmup_days``
and ``chunk_layout``) and the plots. ``chunks.json`` records the layout and each chunk's
status; a chunk's own folder keeps its config, summary and DSO records (its tables are
removed once merged). A chunk that fails is recorded there with its one-line error; the
other chunks' frames (and the failed chunk's finished frames) are merged all the same.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scenarios.config import ConfigError, ScenarioConfig

CHUNKS_FORMAT = 1
CHUNK_DIR = "chunks"


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk of a calendar span: the frames it keeps and the run that computes them."""

    index: int
    start: str           #: its first kept frame's time (ISO, CET)
    end: str             #: exclusive
    run_start: str       #: where its run starts: ``start`` minus the warm-up days
    first_frame: int     #: the span's frame number of its first kept frame
    frames: int          #: frames it keeps
    warmup_frames: int   #: frames its run computes before ``start`` (dropped)

    @property
    def folder(self) -> str:
        return f"{CHUNK_DIR}/{self.index:02d}"


def plan_chunks(cfg: ScenarioConfig) -> list[Chunk]:
    """The chunks of a calendar scenario: ``cfg.calendar.chunks`` consecutive date ranges
    split at midnights with about equal work (the frames of the span's clock, its day types
    and slots, plus the warm-up: ``warmup_days`` before each chunk but the first, cut at the
    span's start), so the first chunk gets about the warm-up's frames more.
    ConfigError if the span has fewer dates with frames than chunks."""
    cal = cfg.calendar
    if cal is None:
        raise ConfigError("--chunks: only calendar runs are split into chunks "
                          "(give --calendar or a [calendar] table)")
    clock = cfg.clock()
    starts = [f.start for f in clock.frames]
    dates = sorted({t.normalize() for t in starts})
    if cal.chunks > len(dates):
        raise ConfigError(f"[calendar] chunks: {cal.chunks} chunks for a span with frames on "
                          f"{len(dates)} date(s); at most {len(dates)}")
    first = [bisect.bisect_left(starts, d) for d in dates]   # frame number at each date
    n, k = len(starts), cal.chunks
    # equal work: chunk 0 runs [0, c1), chunk j [c_j, c_j+1) plus w warm-up frames, so
    # c_j = j L - (j - 1) w with L = (n + (K - 1) w) / K; the cut is the nearest midnight
    w = min(cal.warmup_days, len(dates)) * n / len(dates)
    load = (n + (k - 1) * w) / k
    cuts = [0]
    for j in range(1, k):
        lo, hi = cuts[-1] + 1, len(dates) - (k - j)
        target = j * load - (j - 1) * w
        cuts.append(min(range(lo, hi + 1), key=lambda i: abs(first[i] - target)))
    span0, span1 = pd.Timestamp(cal.start), pd.Timestamp(cal.end)
    out = []
    for j, i in enumerate(cuts):
        t0 = span0 if j == 0 else dates[i]
        t1 = span1 if j == k - 1 else dates[cuts[j + 1]]
        run0 = max(span0, t0 - pd.Timedelta(days=cal.warmup_days))
        f0 = first[i] if j else 0
        f1 = n if j == k - 1 else first[cuts[j + 1]]
        out.append(Chunk(j, t0.isoformat(), t1.isoformat(), run0.isoformat(), f0, f1 - f0,
                         f0 - bisect.bisect_left(starts, run0)))
    return out


def chunk_config(cfg: ScenarioConfig, chunk: Chunk) -> ScenarioConfig:
    """The ordinary calendar run of one chunk (warm-up included, no plots, one chunk)."""
    cal = dataclasses.replace(cfg.calendar, start=chunk.run_start, end=chunk.end, chunks=1)
    return dataclasses.replace(cfg, calendar=cal, plots=False)


def with_chunks(cfg: ScenarioConfig, *, chunks: int | None = None,
                warmup_days: int | None = None) -> ScenarioConfig:
    """``flexcosim run --chunks K --warmup-days W``: the ``[calendar]`` table with them."""
    from scenarios.config import parse_calendar

    if chunks is None and warmup_days is None:
        return cfg
    if cfg.calendar is None:
        raise ConfigError("--chunks: only calendar runs are split into chunks "
                          "(give --calendar or a [calendar] table)")
    table = dataclasses.asdict(cfg.calendar)
    for key, value in (("chunks", chunks), ("warmup_days", warmup_days)):
        if value is not None:
            table[key] = value
    try:
        cal = parse_calendar(table, cfg.resolution_min)
    except ConfigError as exc:
        flag = "--chunks" if "chunks" in str(exc) else "--warmup-days"
        raise ConfigError(f"{flag}: {exc}") from None
    return dataclasses.replace(cfg, calendar=cal)


def layout_text(chunks: list[Chunk]) -> str:
    """One line per chunk: its dates, frames and warm-up (``run --check``, the CLI)."""
    return "\n".join(f"chunk {c.index}: {c.start[:16]} .. {c.end[:16]}: frames {c.first_frame}"
                     f"..{c.first_frame + c.frames - 1} ({c.frames}), warm-up from "
                     f"{c.run_start[:16]} ({c.warmup_frames} frames)" for c in chunks)


# --------------------------------------------------------------------------- running
def run_chunked(cfg: ScenarioConfig, *, out: str | Path | None = None, quiet: bool = True,
                workers: int | None = None) -> tuple[Path, dict]:
    """Run a calendar scenario in its chunks (``workers`` processes, default one per chunk;
    0: one after another in this process) and merge them into one run folder; returns
    (run folder, summary). The summary's ``chunk_layout`` says which chunks failed."""
    from scenarios.bergwald import run_clock
    from scenarios.runner import open_run_dir, scenario_document
    from scenarios.sweep import run_tasks

    chunks = plan_chunks(cfg)
    run_clock(chunk_config(cfg, chunks[0]))   # bad input (e.g. warmup_frames): exit 2 now
    run_dir = open_run_dir(cfg, out=out)
    records = {c.index: {"status": "pending", "error": "", "wall_s": None} for c in chunks}
    _write_layout(run_dir, cfg, chunks, records)
    t0 = time.perf_counter()
    token = uuid.uuid4().hex[:8]

    def args(c: Chunk) -> tuple:
        return (scenario_document(chunk_config(cfg, c)), cfg.source or "<dict>",
                str(run_dir / c.folder))

    def done(c: Chunk, result: dict) -> None:
        records[c.index] = result
        _write_layout(run_dir, cfg, chunks, records)

    stop = threading.Event()
    bar = None if quiet else threading.Thread(
        target=_progress, args=(run_dir, chunks, stop), daemon=True)
    if bar is not None:
        bar.start()
    try:
        run_tasks(chunks, args, done, key=lambda c: f"chunk-{c.index}-{token}",
                  workers=len(chunks) if workers is None else workers)
    finally:
        stop.set()
        if bar is not None:
            bar.join()
    summary = merge_chunks(run_dir, cfg, chunks, records, t_start=t0)
    return run_dir, summary


def _write_layout(run_dir: Path, cfg: ScenarioConfig, chunks: list[Chunk],
                  records: dict) -> None:
    from flexcore.runs import write_json

    write_json(run_dir / "chunks.json", {
        "format": CHUNKS_FORMAT, "span": {"start": cfg.calendar.start, "end": cfg.calendar.end},
        "chunks": len(chunks), "warmup_days": cfg.calendar.warmup_days,
        "layout": [dataclasses.asdict(c) | {"run_dir": c.folder} | records[c.index]
                   for c in chunks]})


def _progress(run_dir: Path, chunks: list[Chunk], stop: threading.Event) -> None:
    """A progress bar over the frames of all chunks (warm-up included): the lines of the
    chunks' ``timeseries/frames.csv``, read on from where the last look ended."""
    from tqdm import tqdm

    total = sum(c.frames + c.warmup_frames for c in chunks)
    seen = {c.index: [0, -1] for c in chunks}   # bytes read, lines (header not counted)
    with tqdm(total=total, unit="frame", desc=f"frames ({len(chunks)} chunks)") as bar:
        while not stop.wait(1.0):
            for c in chunks:
                path = run_dir / c.folder / "timeseries" / "frames.csv"
                try:
                    with path.open("rb") as f:
                        f.seek(seen[c.index][0])
                        data = f.read()
                except OSError:
                    continue
                seen[c.index][0] += len(data)
                seen[c.index][1] += data.count(b"\n")
            bar.update(sum(max(s[1], 0) for s in seen.values()) - bar.n)


# --------------------------------------------------------------------------- merging
def merge_chunks(run_dir: Path, cfg: ScenarioConfig, chunks: list[Chunk], records: dict, *,
                 t_start: float) -> dict:
    """The chunks' tables, flags and pseudonyms into the run folder (frames renumbered over
    the span, warm-up frames dropped), then its summary and plots; the merged chunks'
    tables are removed. Returns the summary."""
    from flexcore.runs import write_json
    from scenarios.results import TABLES, UNIT_FLAG_COLUMNS, read_table, summarize, write_summary

    t_merge = time.perf_counter()
    ts = run_dir / "timeseries"
    ts.mkdir(exist_ok=True)
    expected = [f.timestamp for f in cfg.clock().frames]
    for c in chunks:
        _check_frames(run_dir / c.folder, c, expected, records[c.index])
    for name in TABLES:
        _merge_table(run_dir, chunks, name)
    flags, pseudonyms = [], {}
    for c in chunks:
        folder = run_dir / c.folder
        path = folder / "timeseries" / "unit_flags.csv"
        if path.is_file():
            f = pd.read_csv(path)
            f = f[f["frame"] >= c.warmup_frames]
            flags.append(f.assign(frame=f["frame"] + c.first_frame - c.warmup_frames))
        path = folder / "dso" / "bid_pseudonyms.json"
        if path.is_file():
            pseudonyms |= json.loads(path.read_text())
        if not (run_dir / "elements.parquet").exists() and (folder / "elements.parquet").exists():
            shutil.copyfile(folder / "elements.parquet", run_dir / "elements.parquet")
    flags = (pd.concat(flags, ignore_index=True) if flags
             else pd.DataFrame(columns=list(UNIT_FLAG_COLUMNS)))
    flags.to_csv(ts / "unit_flags.csv", index=False)
    if pseudonyms:
        write_json(run_dir / "dso" / "bid_pseudonyms.json", pseudonyms)
    frames = read_table(run_dir, "frames")
    wall = time.perf_counter() - t_start
    summary = summarize(frames, wall_time_s=wall, frame_h=cfg.clock().frame_h, unit_flags=flags)
    summary["warmup_frames"] = sum(c.warmup_frames for c in chunks
                                   if records[c.index]["status"] == "done")
    summary["chunks"] = len(chunks)
    summary["warmup_days"] = cfg.calendar.warmup_days
    summary["chunks_failed"] = sum(r["status"] != "done" for r in records.values())
    summary["frames_missing"] = len(expected) - len(frames)
    summary["merge_s"] = time.perf_counter() - t_merge   # the tables (plots come after)
    summary["chunk_layout"] = [{"chunk": c.index, "start": c.start, "end": c.end,
                                "run_start": c.run_start, "first_frame": c.first_frame,
                                "frames": c.frames, "warmup_frames": c.warmup_frames,
                                "status": records[c.index]["status"],
                                "error": records[c.index]["error"],
                                "wall_s": records[c.index]["wall_s"]} for c in chunks]
    write_summary(run_dir, frames, summary)
    for c in chunks:   # merged: the chunk's own copies of the tables go
        if records[c.index]["status"] == "done":
            for path in [run_dir / c.folder / "elements.parquet",
                         *(run_dir / c.folder / "timeseries").glob("*.parquet")]:
                path.unlink(missing_ok=True)
    if cfg.plots and len(frames):
        from scenarios.results import write_plots

        write_plots(run_dir, frames, cfg)
    return summary


def _check_frames(folder: Path, c: Chunk, expected: list, record: dict) -> None:
    """A finished chunk holds exactly its frames (warm-up first) at the span's timestamps; a
    failed one a prefix of them. Anything else is a bug (RuntimeError)."""
    from flexcore.errors import InputFileError
    from scenarios.results import read_table

    try:
        stamps = read_table(folder, "frames", columns=["timestamp"])["timestamp"].tolist()
    except InputFileError:
        stamps = []
    want = expected[c.first_frame - c.warmup_frames:c.first_frame + c.frames]
    ok = stamps == want if record["status"] == "done" else stamps == want[:len(stamps)]
    if not ok:
        raise RuntimeError(f"chunk {c.index} ({folder}): its frames are not the span's "
                           f"{c.start}..{c.end} ({len(stamps)} frames, {len(want)} expected)")


def _chunk_tables(folder: Path, name: str, c: Chunk):
    """The chunk's rows of table ``name`` without its warm-up frames, ``frame`` renumbered
    over the span: row group by row group (Parquet), or all at once from the streams of a
    chunk that did not finish (:func:`scenarios.results.read_table`)."""
    from flexcore.errors import InputFileError
    from scenarios.results import read_table

    def renumbered(t: pa.Table) -> pa.Table:
        t = t.filter(pc.greater_equal(t.column("frame"), c.warmup_frames))
        i = t.schema.get_field_index("frame")
        return t.set_column(i, "frame", pc.add(t.column("frame"),
                                               c.first_frame - c.warmup_frames))

    path = folder / "timeseries" / f"{name}.parquet"
    if path.is_file():
        pf = pq.ParquetFile(path)
        pos = pf.schema_arrow.get_field_index("frame")
        for i in range(pf.num_row_groups):
            st = pf.metadata.row_group(i).column(pos).statistics
            if st is not None and st.has_min_max and st.max < c.warmup_frames:
                continue   # warm-up only
            yield renumbered(pf.read_row_group(i))
        return
    try:
        df = read_table(folder, name)
    except InputFileError:
        return
    if len(df):
        yield renumbered(pa.Table.from_pandas(df, preserve_index=False))


def _schema_of(folder: Path, name: str) -> pa.Schema | None:
    path = folder / "timeseries" / f"{name}.parquet"
    if path.is_file():
        return pq.read_schema(path).remove_metadata()
    return None


def _merge_table(run_dir: Path, chunks: list[Chunk], name: str) -> None:
    """``timeseries/<name>.parquet`` from the chunks (the Recorder's row groups and
    compression; columns a chunk lacks, e.g. unit states, are null there)."""
    from scenarios.results import PARQUET_COMPRESSION, PARQUET_ROWS, _schema

    schemas = [s for c in chunks if (s := _schema_of(run_dir / c.folder, name)) is not None]
    schema = (pa.unify_schemas(schemas) if schemas else _schema(name, ()))
    dst = run_dir / "timeseries" / f"{name}.parquet"
    tmp = dst.with_name(f".{dst.name}.tmp")
    coded = [f.name for f in schema if not pa.types.is_floating(f.type)]  # as the Recorder
    with pq.ParquetWriter(str(tmp), schema, compression=PARQUET_COMPRESSION,
                          use_dictionary=coded) as out:
        for c in chunks:
            for t in _chunk_tables(run_dir / c.folder, name, c):
                if not len(t):
                    continue
                cols = [t.column(f.name).cast(f.type) if f.name in t.schema.names
                        else pa.nulls(len(t), f.type) for f in schema]
                out.write_table(pa.Table.from_arrays(cols, schema=schema),
                                row_group_size=PARQUET_ROWS)
    tmp.replace(dst)


__all__ = ["Chunk", "plan_chunks", "chunk_config", "with_chunks", "run_chunked",
           "merge_chunks", "layout_text"]
