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
from shopsight.feature_sql import compute_user_features, connection
from shopsight.features import event_time_span, model_input


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


def active_user_chunks(events_path: Path, as_of: pd.Timestamp, lookback_days: int, chunk_users: int) -> Iterator[list[str]]:
    """User ids with events in [as_of - look-back, as_of), `chunk_users` at a time (sorted, deterministic)."""
    users = connection().execute(
        f"""SELECT DISTINCT user_id FROM read_parquet('{Path(events_path).as_posix()}')
            WHERE timestamp >= $t - INTERVAL {int(lookback_days)} DAY AND timestamp < $t ORDER BY user_id""",
        {"t": as_of.to_pydatetime()},
    ).fetchall()
    ids = [u[0] for u in users]
    for i in range(0, len(ids), chunk_users):
        yield ids[i : i + chunk_users]


def chunk_features(events_path: Path, user_ids: list[str], as_of: pd.Timestamp, params: Params) -> pd.DataFrame:
    """Features at `as_of` of these users only (their events before `as_of`, back to the start of the full-history
    window (features.history_days, default all) or of the look-back if that is longer, read from Parquet by DuckDB)."""
    from shopsight.lifetime import history_start_ns

    fp = params.features
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    lo = as_of - pd.Timedelta(days=fp.lookback_days)
    if fp.history_days is None:
        lo = None
    else:
        lo = min(lo, pd.Timestamp(int(history_start_ns(as_of.value, fp.history_days, fp.utc_offset_ns)), tz="UTC"))
    con = connection()
    con.register("_chunk_users", pd.DataFrame({"user_id": user_ids}))
    try:
        events = con.execute(
            f"""SELECT e.* FROM read_parquet('{Path(events_path).as_posix()}') e JOIN _chunk_users u USING (user_id)
                WHERE e.timestamp < $t {"" if lo is None else "AND e.timestamp >= $lo"}""",
            {"t": as_of.to_pydatetime()} | ({} if lo is None else {"lo": lo.to_pydatetime()}),
        ).df()
    finally:
        con.unregister("_chunk_users")
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True)
    return compute_user_features(
        events, [as_of], fp.windows_days, history_days=fp.history_days, utc_offset_ns=fp.utc_offset_ns
    ).set_index("user_id")


def score_active_users(events_path: Path, as_of: pd.Timestamp, params: Params, propensity, churn) -> pd.DataFrame | None:
    """p_purchase, p_churn and the look-back purchases and revenue of every user active before `as_of`, by user_id
    (None when there is none): chunk by chunk, with the champions' scorers."""
    from tqdm import tqdm

    largest = max(params.features.windows_days)
    chunks = list(active_user_chunks(events_path, as_of, params.features.lookback_days, params.audiences.chunk_users))
    scored = []
    for ids in tqdm(chunks, desc="scoring users", unit="chunk"):
        feats = chunk_features(events_path, ids, as_of, params)
        scored.append(pd.DataFrame({
            "user_id": feats.index.astype("string"),
            "p_purchase": propensity.predict(model_input(feats, propensity.columns)),
            "p_churn": churn.predict(model_input(feats, churn.columns)),
            "purchases_lookback": feats[f"purchases_{largest}d"].to_numpy(),
            "revenue_lookback": feats[f"revenue_{largest}d"].to_numpy(),
        }))
    return pd.concat(scored, ignore_index=True) if scored else None


def build_audiences(params: Params, events_path: Path = paths.EVENTS, out_dir: Path | None = None, from_artifacts: bool = False) -> dict[str, dict]:
    """Score every active user with the propensity and churn champions, select the audiences, explain them,
    and write <out_dir>/<audience>.csv and .parquet. Returns {audience: {users, csv, parquet}}."""
    from tqdm import tqdm

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
    for name, (frame, scorer, tag) in audiences.items():
        reasons: dict[str, str] = {}
        ids = frame["user_id"].tolist()
        for i in tqdm(range(0, len(ids), cfg.chunk_users), desc=f"explaining {name}", unit="chunk", disable=not ids):
            part = ids[i : i + cfg.chunk_users]
            feats = chunk_features(events_path, part, as_of, params).reindex(part)
            top = scorer.explain(model_input(feats, scorer.columns), cfg.top_reasons)
            reasons.update({uid: format_reasons(t) for uid, t in zip(part, top)})
        out = frame.assign(reasons=frame["user_id"].map(reasons), as_of=as_of, model=tag).reset_index(drop=True)
        out.insert(0, "rank", np.arange(1, len(out) + 1))
        out = out.round({"p_purchase": 5, "p_churn": 5, "score": 5, "revenue_lookback": 2, "value_at_risk": 2})
        csv, parquet = out_dir / f"{name}.csv", out_dir / f"{name}.parquet"
        out.to_csv(csv, index=False)
        out.to_parquet(parquet, index=False)
        written[name] = {"users": int(len(out)), "csv": str(csv), "parquet": str(parquet)}
    return written
