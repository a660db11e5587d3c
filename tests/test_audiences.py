import json

import numpy as np
import pandas as pd
import pytest

from shopsight.config import Params
from tests.conftest import make_events


def _store_model(model_dir, columns, weights):
    """A fixed logistic model over the log1p features, saved as a champion (a `linear` candidate): its scores are
    known in advance, and the audiences load it like any family."""
    from shopsight.calibration import Calibrator
    from shopsight.candidates import get_model, save_candidate

    model = get_model("user_binary", "logistic_regression")
    model.coef = {"mean": [0.0] * len(columns), "scale": [1.0] * len(columns), "coef": [float(w) for w in weights], "intercept": 0.0}
    save_candidate(model, model_dir)
    (model_dir / "feature_columns.json").write_text(json.dumps(columns))
    (model_dir / "task.json").write_text(json.dumps({"horizon_days": 7}))
    Calibrator("none").to_json(model_dir / "calibration.json")


def test_audiences_stream_users_and_write_csv_and_parquet(tmp_path, monkeypatch):
    from shopsight.audiences import build_audiences
    from shopsight.features import feature_columns

    params = Params.model_validate({
        "features": {"windows_days": [7, 28]},
        "audiences": {"chunk_users": 2, "propensity_top_percent": 50, "high_value_quantile": 0.5, "churn_min_probability": 0.5, "top_reasons": 2},
    })
    cols = feature_columns([7, 28])
    rows = []
    for k in range(6):  # non-buyers with more views are likelier buyers under the propensity model below
        for v in range(k + 1):
            rows.append((f"n{k}", "i1", "view", f"2026-02-0{1 + v}T10:00:00", 10.0))
    for k, price in enumerate([5.0, 50.0, 500.0]):  # buyers of rising value, all long silent (recency high)
        rows.append((f"b{k}", "i2", "purchase", "2026-02-01T09:00:00", price))
    rows.append(("late", "i1", "view", "2026-02-20T10:00:00", 10.0))
    events = make_events(rows)
    events_path = tmp_path / "events.parquet"
    events.to_parquet(events_path)
    monkeypatch.chdir(tmp_path)
    _store_model(tmp_path / "artifacts" / "propensity", cols, [1.0 if c == "views_28d" else 0.0 for c in cols])
    _store_model(tmp_path / "artifacts" / "churn", cols, [1.0 if c == "recency_days" else 0.0 for c in cols])

    written = build_audiences(params, events_path=events_path, out_dir=tmp_path / "out", from_artifacts=True)
    likely = pd.read_csv(written["likely_buyers"]["csv"])
    assert likely.equals(pd.read_parquet(written["likely_buyers"]["parquet"]).astype(likely.dtypes.to_dict()).assign(as_of=likely["as_of"]))
    # 7 non-buyers (n0..n5, late) -> top 50% = 4, most views first; buyers are excluded
    assert likely["user_id"].tolist() == ["n5", "n4", "n3", "n2"]
    assert likely["reasons"].str.startswith("views_28d").all()
    risk = pd.read_csv(written["high_value_at_risk"]["csv"])
    # buyers at or above the median revenue, most value at risk first
    assert risk["user_id"].tolist() == ["b2", "b1"]
    assert (risk["p_churn"] >= 0.5).all()


def test_audiences_without_models_say_how_to_get_them(tmp_path, monkeypatch):
    from shopsight.audiences import AudienceError, build_audiences

    monkeypatch.chdir(tmp_path)
    make_events([("u", "i", "view", "2026-02-01T10:00:00")]).to_parquet(tmp_path / "events.parquet")
    with pytest.raises(AudienceError, match="dvc repro"):
        build_audiences(Params(), events_path=tmp_path / "events.parquet", from_artifacts=True)


def test_chunks_read_the_events_once_and_score_every_user_as_one_chunk_does(tmp_path, monkeypatch):
    """Many chunks (the events split once into per-chunk files by a hash of user_id) against one chunk (every user's
    features in one frame): the same users, scores, audiences and reasons, and no temporary files left behind."""
    import tempfile

    from shopsight.audiences import build_audiences, features_in_chunks, score_active_users
    from shopsight.features import event_time_span, feature_columns
    from shopsight.simulator import SimulatorParams, generate_shop
    from shopsight.tasks.user_binary import ChampionScorer

    events_path = generate_shop(SimulatorParams(n_users=400, n_items=60, n_categories=5, days=70, seed=5), tmp_path / "sim",
                                progress=False).events_path
    cols = feature_columns([7, 28])
    monkeypatch.chdir(tmp_path)
    _store_model(tmp_path / "artifacts" / "propensity", cols, np.linspace(-0.3, 0.3, len(cols)))
    _store_model(tmp_path / "artifacts" / "churn", cols, np.linspace(0.3, -0.3, len(cols)))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

    def params(chunk_users: int) -> Params:
        return Params.model_validate({
            "features": {"windows_days": [7, 28]},
            "audiences": {"chunk_users": chunk_users, "propensity_top_percent": 20, "high_value_quantile": 0.5,
                          "churn_min_probability": 0.3},
        })

    as_of = event_time_span(events_path)[1].ceil("D")
    scorers = ChampionScorer(tmp_path / "artifacts" / "propensity"), ChampionScorer(tmp_path / "artifacts" / "churn")
    one = score_active_users(events_path, as_of, params(10**6), *scorers)
    many = score_active_users(events_path, as_of, params(25), *scorers)
    assert len(one) > 100 and one["user_id"].is_monotonic_increasing
    pd.testing.assert_frame_equal(many, one, check_exact=False, rtol=1e-12, atol=0.0)
    sizes = [len(f) for f in features_in_chunks(events_path, as_of, params(25))]
    assert len(sizes) > 3 and sum(sizes) == len(one) and max(sizes) < len(one) / 2  # really chunked, every user once

    a = build_audiences(params(10**6), events_path=events_path, out_dir=tmp_path / "one", from_artifacts=True)
    b = build_audiences(params(25), events_path=events_path, out_dir=tmp_path / "many", from_artifacts=True)
    for name in a:
        x, y = pd.read_parquet(a[name]["parquet"]), pd.read_parquet(b[name]["parquet"])
        assert len(x) > 3 and x["reasons"].notna().all(), name
        pd.testing.assert_frame_equal(y, x, check_exact=False, rtol=1e-12, atol=0.0)
    assert not list((tmp_path / "scratch").iterdir())  # the per-chunk files are removed
