"""Benchmark ingest of a generic CSV against DuckDB copying the same CSV to Parquet, in the same run.

    python bench/bench_ingest.py [--rows 1M,3M] [--reject-share 0.2] [--keep DIR]

For each size it writes a generic-format CSV (the simulator's events, repeated with distinct user and
session ids until it has N rows) and a variant where ~20% of the rows break the contract (negative
price, unknown event, unparseable timestamp, missing user, fractional quantity). Each file is then
(a) copied to Parquet by DuckDB (`COPY (SELECT * FROM read_csv(csv)) TO out (FORMAT parquet)`) and
(b) ingested by `python -m shopsight ingest` in a scratch project (data.source: generic), each run in
its own process so its peak RSS is its own; each is run --repeat times (the DuckDB copy once more after the
ingest), the fastest time and the highest peak count (the machine may be shared). The table gives seconds, peak RSS, the ratio ingest/DuckDB
(target: at most 3x), DuckDB's time when it also removes duplicates and sorts like ingest (no contract checks: the
part of the gap any correct ingest has), and the peak-RSS ratio of the largest file to the smallest (flat memory: ~1x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 3.0  # ingest time / DuckDB copy time
CSV_COLUMNS = ("user_id", "item_id", "event_type", "timestamp", "session_id", "category", "price", "quantity")
BASE_EVENTS = 1_000_000  # simulator events generated once, then repeated


def parse_rows(text: str) -> list[int]:
    """'1M,3M,500k' -> [1000000, 3000000, 500000]."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part.rstrip("km")) * scale))
    return out


def base_events(cache: Path) -> pa.Table:
    """About a million simulator events (canonical schema), cached under `cache`."""
    from shopsight.simulator import SimulatorParams, generate_shop

    path = cache / "events.parquet"
    if not path.exists():
        pilot = generate_shop(SimulatorParams(n_users=2_000), cache / "pilot", progress=False)
        n_users = max(100, round(2_000 * BASE_EVENTS / pilot.n_events))
        generate_shop(SimulatorParams(n_users=n_users), cache, progress=False)
    return pq.read_table(path, columns=list(CSV_COLUMNS))


def _suffixed(column: pa.ChunkedArray, suffix: str) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(column, pa.scalar(suffix), "") if suffix else column


def _break_rows(table: pa.Table, share: float, rng: np.random.Generator) -> pa.Table:
    """Make ~`share` of the rows break the contract, five kinds of fault in equal parts."""
    n = len(table)
    bad = rng.random(n) < share
    kind = rng.integers(0, 5, n)
    text = {name: pc.cast(table[name], pa.string()) for name in ("price", "quantity", "timestamp")}
    columns = {name: table[name] for name in table.column_names}
    columns["price"] = pc.if_else(pa.array(bad & (kind == 0)), pa.scalar("-3.5"), text["price"])
    columns["event_type"] = pc.if_else(pa.array(bad & (kind == 1)), pa.scalar("teleport"), table["event_type"])
    columns["timestamp"] = pc.if_else(pa.array(bad & (kind == 2)), pa.scalar("yesterday-ish"), text["timestamp"])
    columns["user_id"] = pc.if_else(pa.array(bad & (kind == 3)), pa.scalar(None, pa.string()), table["user_id"])
    columns["quantity"] = pc.if_else(pa.array(bad & (kind == 4)), pa.scalar("2.5"), text["quantity"])
    return pa.table(columns)


def write_csv(base: pa.Table, rows: int, path: Path, reject_share: float) -> None:
    """`rows` rows of `base` repeated (each repeat's users and sessions renamed, so nothing is a duplicate)."""
    rng = np.random.default_rng(rows)
    written = 0
    with pacsv.CSVWriter(path, pa.schema([(c, pa.string()) for c in CSV_COLUMNS])) as writer:
        repeat = 0
        while written < rows:
            part = base.slice(0, min(len(base), rows - written))
            suffix = f"-r{repeat}" if repeat else ""
            part = part.set_column(0, "user_id", _suffixed(part["user_id"], suffix))
            part = part.set_column(4, "session_id", _suffixed(part["session_id"], suffix))
            if reject_share > 0:
                part = _break_rows(part, reject_share, rng)
            part = pa.table({c: pc.cast(part[c], pa.string()) for c in CSV_COLUMNS})
            writer.write_table(part)
            written += len(part)
            repeat += 1


def measure(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, output) of `command`, run in a fresh wrapper process so the RSS is this run's alone."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        "done = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True)\n"
        "seconds = time.perf_counter() - t0\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': done.returncode, 'seconds': seconds, 'rss': rss, 'out': (done.stdout + done.stderr)[-3000:]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, json.dumps(command)], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result['rc']}):\n{result['out']}")
    return result["seconds"], result["rss"], result["out"]


def duckdb_copy(csv: Path, out: Path, cwd: Path, dedup_and_sort: bool = False) -> tuple[float, float]:
    """DuckDB reading the CSV into Parquet: a plain copy (the target's baseline), or (`dedup_and_sort`) with the exact-
    duplicate removal and the (timestamp, user_id) order every ingest output has, and no contract check: the share
    of ingest's time that a copy does not do but any correct ingest must."""
    query = "SELECT DISTINCT * FROM read_csv('{sys.argv[1]}') ORDER BY timestamp, user_id" if dedup_and_sort else "SELECT * FROM read_csv('{sys.argv[1]}')"
    script = (
        "import duckdb, sys\n"
        f"duckdb.connect().execute(f\"COPY ({query}) TO '{{sys.argv[2]}}' (FORMAT parquet)\")\n"
    )
    seconds, rss, _ = measure([sys.executable, "-c", script, str(csv), str(out)], cwd)
    out.unlink(missing_ok=True)
    return seconds, rss


def shopsight_ingest(csv: Path, project: Path, chunksize: int | None, memory_gb: float | None = None) -> tuple[float, float, dict]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update({"source": "generic", "path": str(csv), "options": {}})
    if chunksize:
        params["data"]["chunksize"] = chunksize
    if memory_gb:
        params["ingest"]["memory_gb"] = memory_gb
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    seconds, rss, _ = measure([sys.executable, "-m", "shopsight", "ingest", "--params", "params.yaml"], project, env)
    report = json.loads((project / "metrics" / "ingest.json").read_text())
    shutil.rmtree(project)
    return seconds, rss, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1M,3M", help="CSV sizes, e.g. 1M,3M,10M")
    ap.add_argument("--reject-share", type=float, default=0.2, help="share of broken rows in the rejects variant (0: none)")
    ap.add_argument("--chunksize", type=int, default=None, help="data.chunksize for the ingest (default: params.yaml's)")
    ap.add_argument("--memory-gb", type=float, default=None, help="ingest.memory_gb (DuckDB's finalising memory; default: params.yaml's)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement; the fastest counts (the machine may be shared)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the CSVs (and the simulator cache) in this folder")
    args = ap.parse_args()
    sizes = parse_rows(args.rows)

    work = Path(tempfile.mkdtemp(prefix="bench_ingest_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        base = base_events(work / "sim")
        print(f"simulator base: {len(base):,} events in {time.perf_counter() - t0:.1f} s", flush=True)
        results = []
        variants = [("clean", 0.0)] + ([(f"{args.reject_share:.0%} rejects", args.reject_share)] if args.reject_share > 0 else [])
        for rows in sizes:
            for label, share in variants:
                csv = work / f"events_{rows}_{'clean' if share == 0 else 'rejects'}.csv"
                if not csv.exists():
                    write_csv(base, rows, csv, share)
                megabytes = csv.stat().st_size / 2**20
                duck = [duckdb_copy(csv, work / "copy.parquet", work) for _ in range(args.repeat)]
                runs = [shopsight_ingest(csv, work / "project", args.chunksize, args.memory_gb) for _ in range(args.repeat)]
                # the copy once more after the ingest: the first can share the disk with the CSV just written (one 100M
                # run: 80.8 s and 58.5 s for two files of the same size), and the fastest copy is the baseline
                duck.append(duckdb_copy(csv, work / "copy.parquet", work))
                floor = [duckdb_copy(csv, work / "copy.parquet", work, dedup_and_sort=True) for _ in range(args.repeat)]
                duck_s, duck_rss = min(d[0] for d in duck), max(d[1] for d in duck)
                ingest_s, ingest_rss, report = min(r[0] for r in runs), max(r[1] for r in runs), runs[0][2]
                row = {"rows": rows, "variant": label, "mb": megabytes, "duck_s": duck_s, "duck_rss": duck_rss,
                       "floor_s": min(f[0] for f in floor), "ingest_s": ingest_s, "ingest_rss": ingest_rss, "rejected": report["rejected"], "rows_out": report["rows_out"]}
                results.append(row)
                print(f"  {rows:>11,} {label:<12} {megabytes:7.0f} MB  duckdb {duck_s:6.1f} s {duck_rss:6.0f} MiB  "
                      f"ingest {ingest_s:6.1f} s {ingest_rss:6.0f} MiB  ({report['rows_out']:,} out, {report['rejected']:,} rejected)", flush=True)
                if args.keep is None:
                    csv.unlink()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("DuckDB: the plain copy (the target's baseline); +dedup+sort: the same copy with ingest's exact-duplicate removal and")
    print("(timestamp, user_id) order, no contract check (what any correct ingest does beyond a copy)")
    print(f"{'rows':>11} {'variant':<12} {'CSV MB':>7} {'DuckDB s':>9} {'DuckDB MiB':>11} {'+dedup+sort s':>14} {'ingest s':>9} {'ingest MiB':>11} "
          f"{'ratio':>6} {'dedup+sort/copy':>16}")
    for r in results:
        print(f"{r['rows']:>11,} {r['variant']:<12} {r['mb']:7.0f} {r['duck_s']:9.2f} {r['duck_rss']:11.0f} {r['floor_s']:14.2f} {r['ingest_s']:9.2f} "
              f"{r['ingest_rss']:11.0f} {r['ingest_s'] / r['duck_s']:5.1f}x {r['floor_s'] / r['duck_s']:15.1f}x")
    worst = max(r["ingest_s"] / r["duck_s"] for r in results)
    print(f"time: worst ingest/DuckDB ratio {worst:.1f}x (target at most {TARGET_RATIO:.0f}x): "
          f"{'target met' if worst <= TARGET_RATIO else 'not met'}")
    for label, _ in variants:
        runs = [r for r in results if r["variant"] == label]
        small, large = min(runs, key=lambda r: r["rows"]), max(runs, key=lambda r: r["rows"])
        print(f"memory ({label}): peak RSS {large['ingest_rss']:.0f} MiB at {large['rows']:,} rows / {small['ingest_rss']:.0f} MiB at "
              f"{small['rows']:,} rows = {large['ingest_rss'] / small['ingest_rss']:.2f}x "
              f"(rows x{large['rows'] / small['rows']:.1f}; DuckDB {large['duck_rss'] / small['duck_rss']:.2f}x)")
    clean = {r["rows"]: r for r in results if r["variant"] == "clean"}
    for r in results:
        if r["variant"] != "clean" and r["rows"] in clean:
            print(f"memory with rejects at {r['rows']:,} rows: {r['ingest_rss'] / clean[r['rows']]['ingest_rss']:.2f}x the clean file's")


if __name__ == "__main__":
    main()
