"""Serving speed of bentos/service.py under load, as ratios against baselines measured in the same run.

    python bench/bench_serving.py [--quick] [--bentoml-home DIR] [--tune | --features]

Starts real `bentoml serve` processes on 127.0.0.1 one after the other and drives them with an async aiohttp
client (one user with 10 events per request, as a checkout page would send):
  - /predict_propensity of the service (adaptive batching, compiled tf.function, prediction log on);
  - /validate_users of the same server: same parsing, limits and batching, no features and no model (echo);
  - bench/naive_service.py: the same model and features without adaptive batching: one compiled call
    (tf.function) per request, so the row measures what batching adds, not Keras' fixed `model.predict` cost;
  - /recommend over the store's recommender (--bentoml-home of `make demo`), else over an untrained model of
    the project's configuration (--recommender-family, default transformer) with the demo catalogue's 500 items.
Prints throughput and p50/p99 latency at concurrency 1, 16, 64 and 256, the share of requests rejected (503
"busy", Retry-After) at 64 and 256, and the ratios the issue targets. The headline is propensity / echo at
concurrency 64 (>= 0.6: the model and features cost less than the server's own parsing and batching); propensity /
unbatched compiled call says what adaptive batching adds; p99 at 64 < 50 ms.

Without --bentoml-home the model is an untrained MLP of the project's architecture and feature columns in a
temporary store: the same computation per request as a trained one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.servers import bentoml_server  # noqa: E402  (the same start/stop as the tests)

CONCURRENCY = (1, 16, 64, 256)
UNBATCHED = "unbatched compiled"
REJECTION_AT = (64, 256)  # the share shed with 503 "busy" is printed at these


def make_propensity_model(home: Path) -> str:
    """An untrained MLP with the project's feature columns, saved to the store in `home`; returns its tag."""
    os.environ["BENTOML_HOME"] = str(home)
    import bentoml

    from models.mlp import build_mlp_classifier
    from shopsight.config import load_params
    from shopsight.features import feature_columns

    columns = feature_columns(load_params(ROOT / "params.yaml").features.windows_days)
    rng = np.random.default_rng(0)
    model = build_mlp_classifier(rng.normal(size=(256, len(columns))).astype("float32"), [64, 32], 0.1, 1e-3, name="bench_mlp")
    with bentoml.models.create("propensity", labels={"task": "propensity"}, metadata={"bench": True}) as m:
        model.save(Path(m.path) / "model.keras")
        (Path(m.path) / "feature_columns.json").write_text(json.dumps(columns))
        np.save(Path(m.path) / "ig_baseline.npy", np.zeros(len(columns), dtype="float32"))  # what training stores for explanations
    return str(m.tag)


def make_recommender_model(home: Path, n_items: int, family: str) -> str:
    """An untrained next-item model of the project's configuration over `n_items` items, saved to the store in
    `home` with the files SequenceScorer loads; returns its tag. Scoring costs what a trained one costs."""
    os.environ["BENTOML_HOME"] = str(home)
    import bentoml

    from shopsight.config import load_params
    from shopsight.recommender import CONFIG_FILE, POPULARITY_FILE, WEIGHTS_FILE, build_encoder, model_config
    from shopsight.sequences import PAD_TOKEN, VOCAB_FILE, ItemVocabulary

    p = load_params(ROOT / "params.yaml").recommender
    vocab = ItemVocabulary((PAD_TOKEN, *(f"item{k}" for k in range(n_items))))
    cfg = model_config(family, vocab.size, p)
    encoder = build_encoder(cfg)
    popularity = np.random.default_rng(0).pareto(1.5, vocab.size).astype("float32")
    with bentoml.models.create("recommender", labels={"task": "recommender"}, metadata={"bench": True, "family": family}) as m:
        path = Path(m.path)
        encoder.save_weights(path / WEIGHTS_FILE)
        (path / CONFIG_FILE).write_text(json.dumps({**cfg, "exclude_purchased": p.exclude_purchased, "event_types": p.event_types}))
        vocab.save(path / VOCAB_FILE)
        np.save(path / POPULARITY_FILE, popularity, allow_pickle=False)
    return str(m.tag)


def user_body(i: int) -> dict:
    now = datetime(2026, 3, 10, tzinfo=timezone.utc)
    events = [
        {"item_id": f"i{(i + k) % 97}", "event_type": "purchase" if k == 9 else ("cart" if k % 4 == 3 else "view"),
         "timestamp": (now - timedelta(hours=5 * k + 1)).isoformat(), "price": 10.0 + k, "category": f"c{k % 5}"}
        for k in range(10)
    ]
    return {"users": [{"user_id": f"u{i}", "events": events, "as_of": now.isoformat()}]}


def recommend_body(i: int, items: list[str]) -> dict:
    history = [items[(i * 7 + k) % len(items)] for k in range(10)]
    return {"users": [{"user_id": f"u{i}", "items": history}], "k": 10}


async def drive(url: str, bodies: list[dict], concurrency: int, seconds: float, headers: dict) -> dict:
    """Send bodies with `concurrency` requests in flight until all are sent or `seconds` passed.

    aiohttp, not httpx: at 64 connections httpx's pool cost the client 3x the CPU of the echo server itself
    on 2 cores (102 vs 346 req/s on /validate_users), which would measure the client, not the service.
    """
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    retry_after: set[str] = set()
    counter = iter(range(len(bodies)))
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    async with client.post(url, json=bodies[i]) as resp:
                        await resp.read()
                        ok, key = resp.status == 200, str(resp.status)
                        if resp.status == 503:
                            retry_after.add(resp.headers.get("Retry-After", "none"))
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    ok, key = False, type(exc).__name__
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pct = (lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))
    sent = len(lat) + sum(errors.values())
    return {"n": len(lat), "errors": errors, "rps": len(lat) / wall, "p50": pct(0.5), "p99": pct(0.99),
            "mean": 1000 * statistics.fmean(lat) if lat else float("nan"), "sent": sent,
            "rejected": errors.get("503", 0) / sent if sent else 0.0, "retry_after": sorted(retry_after)}


def measure(name: str, url: str, make_body, args, headers: dict, results: dict, concurrency=CONCURRENCY) -> None:
    for c in concurrency:
        n = args.requests if c > 1 else max(50, args.requests // 10)
        bodies = [make_body(i) for i in range(n)]
        asyncio.run(drive(url, bodies[: min(2 * c, n)], c, args.seconds, headers))  # warm the connections and batches
        r = asyncio.run(drive(url, bodies, c, args.seconds, headers))
        results[(name, c)] = r
        err = f"  errors {r['errors']}" if r["errors"] else ""
        print(f"{name:<24} c={c:<3} {r['n']:>6} req  {r['rps']:>8.1f} req/s  p50 {r['p50']:>7.1f} ms  p99 {r['p99']:>7.1f} ms{err}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests and seconds per cell")
    ap.add_argument("--bentoml-home", type=Path, help="a store with a propensity (and recommender) champion; default: a temporary one")
    ap.add_argument("--requests", type=int, default=None, help="requests per cell (default 3000, quick 1000)")
    ap.add_argument("--seconds", type=float, default=None, help="time cap per cell (default 30, quick 8)")
    ap.add_argument("--recommender-family", default="transformer", help="family of the untrained recommender without --bentoml-home")
    ap.add_argument("--catalogue", type=int, default=500, help="items of the untrained recommender (the demo catalogue: 500)")
    ap.add_argument("--features", action="store_true", help="only the request feature path in-process: in-memory vs DuckDB per batch size")
    ap.add_argument("--tune", action="store_true", help="only /predict_propensity at c=64 over a grid of batching settings")
    args = ap.parse_args()
    args.requests = args.requests or (1000 if args.quick else 3000)
    args.seconds = args.seconds or (8.0 if args.quick else 30.0)
    if args.tune:
        tune(args)
        return
    if args.features:
        bench_features(args)
        return

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_serving_")))
        env = {"DO_NOT_TRACK": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "SHOPSIGHT_PREDICTION_LOG_DIR": str(tmp / "predictions"),
               "SHOPSIGHT_API_KEY": ""}
        if args.bentoml_home:
            env["BENTOML_HOME"] = str(args.bentoml_home)
            os.environ["BENTOML_HOME"] = str(args.bentoml_home)
            import bentoml

            tag = str(bentoml.models.get("propensity:latest").tag)
            from shopsight.registry import champion_tag

            tag = champion_tag("propensity") or tag
        else:
            tag = make_propensity_model(tmp / "bentoml")
            env["BENTOML_HOME"] = str(tmp / "bentoml")
            env["SHOPSIGHT_RECOMMENDER_TAG"] = make_recommender_model(tmp / "bentoml", args.catalogue, args.recommender_family)
        env["SHOPSIGHT_PROPENSITY_TAG"] = tag
        from shopsight.config import load_params

        serving = load_params(ROOT / "params.yaml").serving
        print(f"model {tag}; batching max_batch_size={serving.max_batch_size} max_latency_ms={serving.max_latency_ms}; "
              f"{args.requests} requests or {args.seconds:.0f} s per cell; {os.cpu_count()} CPUs", flush=True)
        results: dict = {}
        headers: dict = {}

        with bentoml_server("bentos.service:ShopsightService", cwd=ROOT, env=env, log_dir=tmp) as url:
            measure("echo (validate)", f"{url}/validate_users", user_body, args, headers, results)
            measure("propensity", f"{url}/predict_propensity", user_body, args, headers, results)
            items = _recommender_items(env["BENTOML_HOME"])
            if items:
                measure("recommend", f"{url}/recommend", lambda i: recommend_body(i, items), args, headers, results)
            else:
                print("recommend            skipped: no recommender model in the store (pass --bentoml-home of a demo project)")
        logged = _count_logged(tmp / "predictions")
        answered = sum(r["n"] for (name, _), r in results.items() if name == "propensity")
        with bentoml_server("bench.naive_service:NaiveService", cwd=ROOT, env=env, log_dir=tmp) as url:
            measure(UNBATCHED, f"{url}/predict_propensity", user_body, args, headers, results, concurrency=(1, 16, 64))

    prop, echo, unbatched = (results[(k, 64)] for k in ("propensity", "echo (validate)", UNBATCHED))
    print()
    print(f"echo p99 at c=64: {echo['p99']:.1f} ms (the server's own floor on these CPUs, client included)")
    for c in CONCURRENCY:
        if ("recommend", c) in results:
            r = results[("recommend", c)]
            print(f"recommend p50/p99 at c={c}: {r['p50']:.1f} / {r['p99']:.1f} ms")
    print()
    print(f"prediction log: {logged} records for >= {answered} answered propensity requests (plus warm-up requests)")
    print(f"throughput ratio propensity / echo at c=64:                   {prop['rps'] / echo['rps']:.2f}  (target >= 0.60; the headline)")
    print(f"throughput ratio propensity / unbatched compiled call at c=64: {prop['rps'] / unbatched['rps']:.2f}x  (what adaptive batching adds)")
    print(f"propensity p99 at c=64: {prop['p99']:.1f} ms  (target < 50 ms)")
    for name in ("echo (validate)", "propensity", "recommend"):
        for c in REJECTION_AT:
            if (name, c) in results:
                r = results[(name, c)]
                print(f"rejected (503 busy) {name:<16} at c={c:<3}: {r['errors'].get('503', 0):>5} / {r['sent']:<5} = {100 * r['rejected']:5.1f}%"
                      f"  Retry-After {','.join(r['retry_after']) or '-'}")


def bench_features(args) -> None:
    """Request histories -> model input rows, as the service computes them (in memory, shopsight/feature_fast.py)
    and as it did before (canonical frame + one DuckDB query per as_of), in one process, per batch size."""
    from shopsight.config import load_params
    from shopsight.features import build_user_features, feature_columns, model_input
    from shopsight.serving import UserHistory, features_for_histories, histories_to_events

    params = load_params(ROOT / "params.yaml").features
    columns = feature_columns(params.windows_days)

    def duckdb_path(users):
        events = histories_to_events(users)
        feats = build_user_features(events, users[0].as_of, params)
        return model_input(feats.loc[[str(i) for i in range(len(users))]], columns)

    def best_of(fn, users, repeat):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(users)
            times.append(time.perf_counter() - t0)
        return 1000 * min(times)

    repeat = 5 if args.quick else 20
    for n_users, n_events in [(1, 10), (16, 10), (64, 10), (256, 10), (1000, 10), (100, 2000)]:
        users = []
        for i in range(n_users):
            body = user_body(i)["users"][0]
            body["events"] = [{**e, "item_id": f"i{(i + k) % 997}"} for k in range(n_events // 10) for e in body["events"]]
            users.append(UserHistory.model_validate(body))
        fast = best_of(lambda u: features_for_histories(u, params), users, repeat)
        sql = best_of(duckdb_path, users, repeat)
        print(f"{n_users:>5} users x {n_events:>4} events: in-memory {fast:8.2f} ms  DuckDB {sql:8.2f} ms  ratio {sql / fast:6.1f}x", flush=True)


TUNE_GRID = [(16, 100), (64, 100), (64, 300), (256, 300), (64, 1000), (256, 1000)]


def tune(args) -> None:
    """Throughput, latency and rejected requests (503 when a batch cannot meet max_latency_ms) per setting."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="bench_serving_tune_") as tmp:
        tmp = Path(tmp)
        tag = make_propensity_model(tmp / "bentoml")
        env = {"DO_NOT_TRACK": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "SHOPSIGHT_PREDICTION_LOG_DIR": str(tmp / "predictions"),
               "SHOPSIGHT_API_KEY": "", "BENTOML_HOME": str(tmp / "bentoml"), "SHOPSIGHT_PROPENSITY_TAG": tag}
        bodies = [user_body(i) for i in range(args.requests)]
        print(f"/predict_propensity at c=64, {args.requests} requests or {args.seconds:.0f} s per setting", flush=True)
        for batch, latency in TUNE_GRID:
            params = yaml.safe_load((ROOT / "params.yaml").read_text())
            params["serving"].update(max_batch_size=batch, max_latency_ms=latency)
            path = tmp / f"params-{batch}-{latency}.yaml"
            path.write_text(yaml.safe_dump(params, sort_keys=False))
            with bentoml_server("bentos.service:ShopsightService", cwd=ROOT, env={**env, "SHOPSIGHT_PARAMS": str(path)}, log_dir=tmp) as url:
                asyncio.run(drive(f"{url}/predict_propensity", bodies[:128], 64, args.seconds, {}))
                r = asyncio.run(drive(f"{url}/predict_propensity", bodies, 64, args.seconds, {}))
            print(f"max_batch_size={batch:<4} max_latency_ms={latency:<5} {r['rps']:>7.1f} req/s  p50 {r['p50']:>7.1f} ms  "
                  f"p99 {r['p99']:>7.1f} ms  rejected {100 * r['rejected']:.1f}%  errors {r['errors'] or 0}", flush=True)


def _recommender_items(home: str) -> list[str]:
    """Item ids the store's recommender knows (empty when there is none)."""
    os.environ["BENTOML_HOME"] = home
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        model = bentoml.models.get("recommender:latest")
    except NotFound:
        return []
    from shopsight.sequences import VOCAB_FILE, ItemVocabulary

    vocab = ItemVocabulary.load(Path(model.path) / VOCAB_FILE)
    return vocab.decode(np.arange(2, min(vocab.size, 500)))


def _count_logged(directory: Path) -> int:
    from shopsight.prediction_log import read_prediction_log

    return int((read_prediction_log(directory)["endpoint"] == "predict_propensity").sum())


if __name__ == "__main__":
    main()
