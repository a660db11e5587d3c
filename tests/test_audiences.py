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
