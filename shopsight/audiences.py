"""Campaign audiences from the champion models, as CSV (for a spreadsheet) and Parquet (for a pipeline).

* likely_buyers: the top N% by calibrated purchase propensity among users who have not bought in the
  look-back window (so the campaign is not spent on people who buy anyway);
* high_value_at_risk: users whose look-back revenue is in the top quantile of buyers and whose calibrated
  churn probability is at or above the threshold, most valuable risk first.

Scoring streams every user active in the look-back window in chunks (bounded memory, a progress bar), with
the same feature code as training and the service; the top reasons (integrated gradients) are computed only
for the users who made it into an audience.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import Params
from shopsight.feature_sql import compute_user_features
from shopsight.features import event_time_span, model_input


SPLIT_MEMORY = "1GB"  # DuckDB's memory while it splits the events into per-chunk files (it spills to disk beyond)


class AudienceError(ValueError):
    """No model to score with, or no events to score."""


def champion_dir(task: str, from_artifacts: bool = False) -> tuple[Path, str]:
    """The model directory of the task's champion in the BentoML store (or artifacts/<task> when asked)."""
    if from_artifacts:
        path = paths.ARTIFACTS_DIR / task
        if not (path / "candidate.json").exists():
            raise AudienceError(f"{path}/candidate.json not found: run `dvc repro` first")
        return path, f"{path} (artifacts)"
    import bentoml

    from shopsight.registry import champion_tag

    tag = champion_tag(task)
    if tag is None:
        raise AudienceError(f"no {task} champion in the registry: run `make demo` (or the training flow), or pass --from-artifacts")
    return Path(bentoml.models.get(tag).path), tag


def _feature_range(as_of: pd.Timestamp, fp) -> tuple[pd.Timestamp, pd.Timestamp | None]:
    """`as_of` in UTC and the first instant the features at `as_of` read: the start of the full-history window
    (features.history_days; None = all history) or of the look-back if that is longer."""
    from shopsight.lifetime import history_start_ns

    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    if fp.history_days is None:
        return as_of, None
    lo = as_of - pd.Timedelta(days=fp.lookback_days)
    return as_of, min(lo, pd.Timestamp(int(history_start_ns(as_of.value, fp.history_days, fp.utc_offset_ns)), tz="UTC"))


def features_in_chunks(events_path: Path, as_of: pd.Timestamp, params: Params, users: list[str] | None = None,
                       desc: str = "scoring users") -> Iterator[pd.DataFrame]:
    """Features at `as_of` of every user active in the look-back before it (or of `users`, all of them active),
    about audiences.chunk_users users at a time: one frame per chunk, indexed by user_id (memory bounded by the
    chunk, a progress bar over the chunks). Chunks come in no particular order of users.

    The events are read once, whatever the number of users: one DuckDB pass (its memory capped at SPLIT_MEMORY,
    spilling beyond) writes the events of the features' time range (of those users) into ceil(users / chunk_users)
    Parquet files by a hash of user_id, in a temporary folder, and the features of each file are computed from it
    by DuckDB. (A scan of the whole log per chunk grew as users x events: 789 CPU s for 100M events.)"""
    import shutil
    import tempfile

    import duckdb
    from tqdm import tqdm

    fp = params.features
    as_of, lo = _feature_range(as_of, fp)
    source = f"read_parquet('{Path(events_path).as_posix()}')"
    args = {"t": as_of.to_pydatetime()} | ({} if lo is None else {"lo": lo.to_pydatetime()})
    in_range = "e.timestamp < $t" + ("" if lo is None else " AND e.timestamp >= $lo")
    tmp = Path(tempfile.mkdtemp(prefix="shopsight-audiences-"))
    con = duckdb.connect(config={"memory_limit": SPLIT_MEMORY, "preserve_insertion_order": False, "temp_directory": str(tmp / "spill")})
    try:
        con.execute("SET TimeZone='UTC'")
        if users is None:
            n_users = con.execute(
                f"SELECT count(DISTINCT user_id) FROM {source} e WHERE e.timestamp >= $a AND e.timestamp < $t",
                {"t": args["t"], "a": (as_of - pd.Timedelta(days=fp.lookback_days)).to_pydatetime()},
            ).fetchone()[0]
            selected = f"SELECT e.* FROM {source} e WHERE {in_range}"
        else:
            n_users = len(users)
            con.register("_chunk_users", pd.DataFrame({"user_id": pd.Series(users, dtype=object)}))
            selected = f"SELECT e.* FROM {source} e SEMI JOIN _chunk_users u ON e.user_id = u.user_id WHERE {in_range}"
        n_chunks = -(-n_users // params.audiences.chunk_users)
        if n_chunks:
            con.execute(
                f"COPY (SELECT *, hash(user_id) % {n_chunks} AS _chunk FROM ({selected})) TO '{(tmp / 'chunks').as_posix()}' "
                "(FORMAT parquet, PARTITION_BY (_chunk))", args,
            )
        con.close()  # the split's buffers go before the chunks are computed (closing again below is a no-op)
        for k in tqdm(range(n_chunks), desc=desc, unit="chunk", disable=n_chunks == 0):
            if (tmp / "chunks" / f"_chunk={k}").is_dir():
                yield compute_user_features(
                    tmp / "chunks" / f"_chunk={k}" / "*.parquet", [as_of], fp.windows_days,
                    history_days=fp.history_days, utc_offset_ns=fp.utc_offset_ns,
                ).set_index("user_id")
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)


def score_active_users(events_path: Path, as_of: pd.Timestamp, params: Params, propensity, churn) -> pd.DataFrame | None:
    """p_purchase, p_churn and the look-back purchases and revenue of every user active before `as_of`, rows by
    user_id (None when there is none): chunk by chunk (features_in_chunks), with the champions' scorers."""
    largest = max(params.features.windows_days)
    scored = []
    for feats in features_in_chunks(events_path, as_of, params):
        scored.append(pd.DataFrame({
            "user_id": feats.index.astype("string"),
            "p_purchase": propensity.predict(model_input(feats, propensity.columns)),
            "p_churn": churn.predict(model_input(feats, churn.columns)),
            "purchases_lookback": feats[f"purchases_{largest}d"].to_numpy(),
            "revenue_lookback": feats[f"revenue_{largest}d"].to_numpy(),
        }))
    if not scored:
        return None
    users = pd.concat(scored, ignore_index=True)
    return users.iloc[np.argsort(users["user_id"].to_numpy(dtype=object), kind="stable")].reset_index(drop=True)


def build_audiences(params: Params, events_path: Path = paths.EVENTS, out_dir: Path | None = None, from_artifacts: bool = False) -> dict[str, dict]:
    """Score every active user with the propensity and churn champions, select the audiences, explain them,
    and write <out_dir>/<audience>.csv and .parquet. Returns {audience: {users, csv, parquet}}."""
    from shopsight.explain import format_reasons
    from shopsight.tasks.user_binary import ChampionScorer

    cfg = params.audiences
    out_dir = Path(out_dir or cfg.out_dir)
    if not Path(events_path).exists():
        raise AudienceError(f"{events_path} not found: run `dvc repro ingest` first")
    prop_dir, prop_tag = champion_dir("propensity", from_artifacts)
    churn_path, churn_tag = champion_dir("churn", from_artifacts)
    propensity, churn = ChampionScorer(prop_dir), ChampionScorer(churn_path)  # whatever family each champion is

    as_of = event_time_span(events_path)[1].ceil("D")
    if params.orchestration.dask.partition:  # the same scoring, one user-hash shard per Dask task
        from shopsight.shards import score_users_on_dask

        users = score_users_on_dask(events_path, as_of, params, prop_dir, churn_path)
    else:
        users = score_active_users(events_path, as_of, params, propensity, churn)
    if users is None:
        raise AudienceError(f"{events_path}: no user has events in the look-back window before {as_of}")

    # revenue is money: compared in cents, so the order DuckDB adds prices in (parallel, not fixed) cannot move a
    # user across the high-value threshold by the last bit of a float
    users["revenue_lookback"] = users["revenue_lookback"].round(2)
    eligible = users[users["purchases_lookback"] == 0] if cfg.exclude_recent_buyers else users
    n_top = int(np.ceil(len(eligible) * cfg.propensity_top_percent / 100.0))
    likely = eligible.nlargest(n_top, "p_purchase").assign(score=lambda f: f["p_purchase"])
    buyers = users[users["revenue_lookback"] > 0]
    threshold = float(buyers["revenue_lookback"].quantile(cfg.high_value_quantile)) if len(buyers) else np.inf
    risk = users[(users["revenue_lookback"] >= threshold) & (users["p_churn"] >= cfg.churn_min_probability)]
    risk = risk.assign(score=risk["p_churn"], value_at_risk=risk["p_churn"] * risk["revenue_lookback"]).sort_values("value_at_risk", ascending=False)

    audiences = {"likely_buyers": (likely, propensity, prop_tag), "high_value_at_risk": (risk, churn, churn_tag)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict] = {}
    # the top reasons of the users in an audience, from their features: one pass over the events for both audiences
    members = {name: pd.Index(frame["user_id"].to_numpy(dtype=object)) for name, (frame, _, _) in audiences.items()}
    reasons: dict[str, dict[str, str]] = {name: {} for name in audiences}
    selected = sorted(set().union(*members.values()))
    for feats in features_in_chunks(events_path, as_of, params, users=selected, desc="explaining audiences") if selected else ():
        for name, (_, scorer, _) in audiences.items():
            part = feats[members[name].get_indexer(feats.index.astype(object)) >= 0]
            if len(part):
                top = scorer.explain(model_input(part, scorer.columns), cfg.top_reasons)
                reasons[name].update({uid: format_reasons(t) for uid, t in zip(part.index, top)})
    for name, (frame, scorer, tag) in audiences.items():
        out = frame.assign(reasons=frame["user_id"].map(reasons[name]), as_of=as_of, model=tag).reset_index(drop=True)
        out.insert(0, "rank", np.arange(1, len(out) + 1))
        out = out.round({"p_purchase": 5, "p_churn": 5, "score": 5, "revenue_lookback": 2, "value_at_risk": 2})
        csv, parquet = out_dir / f"{name}.csv", out_dir / f"{name}.parquet"
        out.to_csv(csv, index=False)
        out.to_parquet(parquet, index=False)
        written[name] = {"users": int(len(out)), "csv": str(csv), "parquet": str(parquet)}
    return written
