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


# ---- strict request types ----

EVENT = {"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize("field, value", [
    ("price", "12.5"), ("price", True), ("price", 1e10), ("price", float("inf")),
    ("quantity", "2"), ("quantity", True), ("quantity", 2.0),
    ("timestamp", 1767225600), ("timestamp", 1767225600000), ("timestamp", "1767225600"), ("timestamp", "1.7e9"), ("timestamp", True),
    ("timestamp", "9999-12-31T00:00:00Z"),
    ("item_id", 7), ("item_id", "x" * 129), ("category", "x" * 129),
])
def test_lax_or_out_of_range_event_fields_are_rejected(field, value):
    with pytest.raises(ValidationError) as info:
        EventIn.model_validate({**EVENT, field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_integral_prices_and_iso_text_are_accepted():
    event = EventIn.model_validate({**EVENT, "price": 12, "timestamp": "2026-01-01T01:00:00+01:00"})
    assert event.price == 12.0 and event.timestamp == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert UserHistory.model_validate({"user_id": "a", "as_of": "2026-03-10"}).as_of == datetime(2026, 3, 10, tzinfo=timezone.utc)


# ---- a bad item fails alone ----


def _score(values):
    from shopsight.serving import require_finite

    if any(v == "boom" for v in values):
        raise RuntimeError("server fault")
    return require_finite([{"value": 1.0 / float(v)} for v in values])  # "x": ValueError, "0": ZeroDivisionError, "1e-320": inf


def test_answer_batch_isolates_each_failing_item_in_its_requests_slice():
    from bentoml._internal.runner.container import AutoContainer

    from shopsight.serving import answer_batch

    requests = [["1", "2"], ["x"], ["4", "0"], ["5"], ["1e-320"], ["boom"], ["8"]]
    batch, indices = AutoContainer.batches_to_batch(requests)
    answers = answer_batch(batch, _score, lambda v: ("values", v), "test")
    per_request = AutoContainer.batch_to_batches(answers, indices)  # what BentoML hands each request
    assert per_request[0] == [{"value": 1.0}, {"value": 0.5}] and per_request[3] == [{"value": 0.2}]
    assert per_request[6] == [{"value": 0.125}]
    for bad, item in ((1, "x"), (2, "0"), (4, "1e-320")):
        assert isinstance(per_request[bad], ValidationError)
        (error,) = per_request[bad].errors()
        assert error["loc"] == ("values", item) and "cannot be answered" in error["msg"]
    assert "non-finite value" in per_request[4].errors()[0]["msg"]
    assert isinstance(per_request[5], RuntimeError) and not isinstance(per_request[5], ValueError)  # the server's fault: a 500


def test_a_bad_item_fails_only_its_own_request_in_bentomls_dispatcher():
    """BentoML's own adaptive-batching dispatcher, as its server wires it (app.py batch_infer): the request holding a
    bad item raises, every other request of the same batches gets its answers."""
    import asyncio

    from bentoml._internal.marshal.dispatcher import CorkDispatcher
    from bentoml._internal.runner.container import AutoContainer

    from shopsight.serving import answer_batch

    async def run():
        dispatcher = CorkDispatcher(max_latency_in_ms=5000, max_batch_size=64, fallback=lambda: None, get_batch_size=len)
        sizes = []

        async def infer(batches):
            batch, indices = AutoContainer.batches_to_batch(batches)
            sizes.append(len(batches))
            return AutoContainer.batch_to_batches(answer_batch(batch, _score, lambda v: ("values", v), "test"), indices)

        call = dispatcher(infer)
        requests = [[str(i + 1)] if i % 10 else ["x"] for i in range(200)]
        results = await asyncio.gather(*(call(r) for r in requests), return_exceptions=True)
        dispatcher.shutdown()
        return requests, results, sizes

    requests, results, sizes = asyncio.run(run())
    assert max(sizes) > 1  # some requests really were batched together
    for request, result in zip(requests, results):
        if request == ["x"]:
            assert isinstance(result, ValidationError)
        else:
            assert result == [{"value": 1.0 / float(request[0])}]


def test_client_errors_are_logged_as_one_line():
    import logging

    from bentoml.exceptions import BadInput, ServiceUnavailable

    from shopsight.serving import OneLineClientErrors, request_error

    def record_of(exc):
        try:
            raise exc
        except Exception:
            import sys

            return logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/forecast_demand", "POST"), sys.exc_info())

    f = OneLineClientErrors()
    for exc, status in ((request_error("forecast_demand", ("series", "s1"), "start:\n out of range"), 400), (BadInput("k=51"), 400),
                        (ServiceUnavailable("process is overloaded"), 503)):
        record = record_of(exc)
        assert f.filter(record) and record.exc_info is None and record.levelno == logging.INFO
        line = logging.Formatter().format(record)
        assert line.startswith(f"{status} on /forecast_demand [POST]: ") and "\n" not in line
    server_fault = record_of(RuntimeError("bug"))
    assert f.filter(server_fault) and server_fault.exc_info is not None  # a 500 keeps its traceback
