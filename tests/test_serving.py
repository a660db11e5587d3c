"""The service's feature path must equal the batch path for the same events (no training/serving skew)."""

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from shopsight.config import FeatureParams
from shopsight.features import build_user_features, feature_columns, model_input
from shopsight.serving import EventIn, UserHistory, features_for_histories
from tests.conftest import make_events

PARAMS = FeatureParams(windows_days=[7, 28], horizon_days=7)
CUTOFF = datetime(2026, 2, 1, tzinfo=timezone.utc)
ROWS = [
    ("a", "i1", "view", "2026-01-31 10:00", 10.0, "c1"),
    ("a", "i1", "cart", "2026-01-31 10:02", 10.0, "c1"),
    ("a", "i1", "purchase", "2026-01-31 10:05", 10.0, "c1"),
    ("a", "i2", "view", "2026-01-10 09:00", 30.0, "c2"),
    ("a", "i4", "view", "2026-01-10 11:00", 12.5, "c2"),
    ("b", "i3", "view", "2026-01-20 12:00", 5.0, "c1"),
    ("b", "i3", "favorite", "2026-01-20 12:10", 5.0, "c1"),
]


def _histories():
    users = {}
    for user, item, etype, ts, price, cat in ROWS:
        users.setdefault(user, []).append(
            EventIn(item_id=item, event_type=etype, timestamp=pd.Timestamp(ts).to_pydatetime(), price=price, category=cat)
        )
    return [UserHistory(user_id=u, events=e, as_of=CUTOFF) for u, e in users.items()]


def test_service_features_equal_batch_features():
    x_service, active, _ = features_for_histories(_histories(), PARAMS)
    batch = build_user_features(make_events(ROWS), pd.Timestamp(CUTOFF), PARAMS)
    x_batch = model_input(batch.loc[["a", "b"]], feature_columns([7, 28]))
    np.testing.assert_array_equal(x_service, x_batch)
    assert active == [True, True]


def test_user_without_recent_events_is_scored_as_idle_and_flagged():
    users = _histories() + [UserHistory(user_id="new", events=[], as_of=CUTOFF)]
    x, active, _ = features_for_histories(users, PARAMS)
    assert active == [True, True, False]
    assert np.isfinite(x).all()


def test_same_user_twice_in_a_batch_is_not_mixed():
    h = _histories()
    x, _, _ = features_for_histories([h[0], h[0], h[1]], PARAMS)
    np.testing.assert_array_equal(x[0], x[1])
    assert not np.array_equal(x[0], x[2])


@pytest.mark.parametrize(
    "bad",
    [
        {"item_id": "", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z"},
        {"item_id": "i", "event_type": "teleport", "timestamp": "2026-01-01T00:00:00Z"},
        {"item_id": "i", "event_type": "view", "timestamp": "yesterday"},
        {"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "price": float("nan")},
        {"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "price": -1},
    ],
)
def test_malformed_events_are_rejected_by_the_schema(bad):
    with pytest.raises(ValidationError):
        EventIn.model_validate(bad)
