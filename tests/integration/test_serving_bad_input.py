"""One client's bad request never hurts another, over a real `bentoml serve` with every model registered:
a bad item fails alone (400) while the requests batched with it are answered; the same limits on every endpoint;
strict types; no non-finite number in any answer; one log line per 400; overload is a 503 "busy" with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from pathlib import Path

import httpx
import pytest

from shopsight.config import load_params
from tests.integration.servers import bentoml_server, service_env

pytestmark = pytest.mark.integration

SERVICE = "bentos.service:ShopsightService"


@pytest.fixture(scope="module")
def registered(tiny_project):
    from shopsight.churn import register_churn
    from shopsight.demand import register_demand
    from shopsight.pipeline import register_propensity
    from shopsight.recommender import register_recommender

    with contextlib.chdir(tiny_project):
        params = load_params("params.yaml")
        return {"propensity": register_propensity(params), "churn": register_churn(params), "demand": register_demand(params),
                "recommender": register_recommender(params)}


@pytest.fixture(scope="module")
def server(tiny_project, registered, tmp_path_factory):
    """(url, server log path) of the service with every model."""
    logs = tmp_path_factory.mktemp("bad-input")
    with bentoml_server(SERVICE, cwd=tiny_project, env=service_env(tiny_project, logs), log_dir=logs) as url:
        yield url, logs / f"bentoml-serve-{url.rsplit(':', 1)[1]}.log"


@pytest.fixture(scope="module")
def url(server):
    return server[0]


@pytest.fixture(scope="module")
def catalogue(tiny_project):
    return json.loads((tiny_project / "data" / "sequences" / "item_vocab.json").read_text())["items"]


def _user(uid: str, **extra) -> dict:
    events = [{"item_id": f"i{k}", "event_type": "view", "timestamp": f"2026-03-0{k + 1}T10:00:00Z", "price": 12.5} for k in range(3)]
    return {"user_id": uid, "events": events, "as_of": "2026-03-10T00:00:00Z", **extra}


def _series(sid: str, **extra) -> dict:
    return {"series_id": sid, "level": "item", "history": [0, 1, 0, 2, 1, 0, 3], "start": "2026-03-02", **extra}


def _strict_json(text: str):
    """JSON as RFC 8259 has it: a bare NaN or Infinity fails."""
    def refuse(token):
        raise ValueError(f"non-finite number {token} in the answer")
    return json.loads(text, parse_constant=refuse)


def _valid(endpoint: str, i: int, catalogue) -> dict:
    if endpoint == "forecast_demand":
        return {"series": [_series(f"ok-{i}")]}
    if endpoint == "recommend":
        return {"users": [{"user_id": f"ok-{i}", "items": catalogue[i % 5: i % 5 + 3]}], "k": 5}
    if endpoint == "similar_items":
        return {"item_ids": [catalogue[i % 7]], "k": 3}
    return {"users": [_user(f"ok-{i}")]}


# Requests that parse as JSON of the right shape but must be a 400; each sent among valid ones.
BAD_ITEMS = [
    ("forecast_demand", {"series": [_series("late", start="9999-12-31")]}, "start"),
    ("forecast_demand", {"series": [_series("early", start="0001-01-01")]}, "start"),
    ("forecast_demand", {"series": [_series("huge", history=[1e308] * 7)]}, "history"),
    ("forecast_demand", {"series": [_series("ok-but"), _series("late2", start="9999-12-31")]}, "start"),
    ("predict_propensity", {"users": [_user("late", as_of="9999-12-31T00:00:00Z")]}, "as_of"),
    ("churn_risk", {"users": [_user("late", as_of="9999-12-31T00:00:00Z")]}, "as_of"),
    ("churn_risk", {"users": [_user("yes", explain="yes")]}, "explain"),
    ("validate_users", {"users": [_user("p", events=[{"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "price": "12.5"}])]}, "price"),
]


BAD_AT = (10, 21)


@pytest.mark.parametrize("endpoint, bad, field", BAD_ITEMS)
def test_a_bad_item_fails_alone_and_the_requests_batched_with_it_are_answered(url, catalogue, endpoint, bad, field):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            bodies = [bad if i in BAD_AT else _valid(endpoint, i, catalogue) for i in range(32)]
            return await asyncio.gather(*(client.post(f"{url}/{endpoint}", json=b) for b in bodies))

    for _ in range(3):  # three rounds: adaptive batching mixes them differently each time
        answers = asyncio.run(burst())
        bad_answers = [answers[i] for i in BAD_AT]
        good = [a for i, a in enumerate(answers) if i not in BAD_AT]
        assert [a.status_code for a in bad_answers] == [400, 400], [a.text[:300] for a in bad_answers]
        assert all(field in a.text for a in bad_answers), bad_answers[0].text
        assert {a.status_code for a in good} == {200}, {a.status_code: a.text[:300] for a in good if a.status_code != 200}
        for a in good:
            _strict_json(a.text)


LIST_FIELDS = {
    "predict_propensity": ("users", lambda i: {"user_id": f"u{i}"}),
    "validate_users": ("users", lambda i: {"user_id": f"u{i}"}),
    "explain_propensity": ("users", lambda i: {"user_id": f"u{i}"}),
    "churn_risk": ("users", lambda i: {"user_id": f"u{i}"}),
    "recommend": ("users", lambda i: {"user_id": f"u{i}", "items": []}),
    "similar_items": ("item_ids", lambda i: f"i{i}"),
    "forecast_demand": ("series", lambda i: {"series_id": f"s{i}", "level": "item"}),
}


@pytest.mark.parametrize("endpoint", sorted(LIST_FIELDS))
def test_the_same_list_limits_on_every_endpoint(url, endpoint):
    field, make = LIST_FIELDS[endpoint]
    limit = load_params().serving.max_users_per_request
    empty = httpx.post(f"{url}/{endpoint}", json={field: []}, timeout=60)
    assert empty.status_code == 400 and field in empty.text, empty.text[:500]
    over = httpx.post(f"{url}/{endpoint}", json={field: [make(i) for i in range(limit + 1)]}, timeout=60)
    assert over.status_code == 400 and field in over.text and str(limit) in over.text, over.text[:500]
    at = httpx.post(f"{url}/{endpoint}", json={field: [make(i) for i in range(limit)]}, timeout=120)
    assert at.status_code == 200, at.text[:500]
    assert len(_strict_json(at.text)) == limit


LONG = "x" * 257
STRICT_CASES = [
    ("predict_propensity", {"users": [_user("a", events=[{"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "price": "12.5"}])]}, "price"),
    ("predict_propensity", {"users": [_user("a", events=[{"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "price": True}])]}, "price"),
    ("predict_propensity", {"users": [_user("a", events=[{"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "quantity": "2"}])]}, "quantity"),
    ("predict_propensity", {"users": [_user("a", events=[{"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "quantity": 2.0}])]}, "quantity"),
    ("predict_propensity", {"users": [_user("a", events=[{"item_id": "i", "event_type": "view", "timestamp": 1767225600}])]}, "timestamp"),
    ("predict_propensity", {"users": [_user("a", events=[{"item_id": "i", "event_type": "view", "timestamp": 1767225600000}])]}, "timestamp"),
    ("predict_propensity", {"users": [_user("a", events=[{"item_id": "i", "event_type": "view", "timestamp": "1767225600"}])]}, "timestamp"),
    ("predict_propensity", {"users": [_user("a", as_of=1767225600)]}, "as_of"),
    ("churn_risk", {"users": [_user("a", explain="yes")]}, "explain"),
    ("churn_risk", {"users": [_user("a", explain=1)]}, "explain"),
    ("recommend", {"users": [{"items": ["x"]}], "k": "10"}, "k"),
    ("recommend", {"users": [{"items": ["x"]}], "k": True}, "k"),
    ("recommend", {"users": [{"items": ["x"]}], "k": 10.0}, "k"),
    ("recommend", {"users": [{"items": ["x"]}], "exclude_purchased": "yes"}, "exclude_purchased"),
    ("recommend", {"users": [{"items": ["x"]}], "exclude_purchased": 1}, "exclude_purchased"),
    ("recommend", {"users": [{"items": ["x"], "exclude_items": [LONG]}]}, "exclude_items"),
    ("recommend", {"users": [{"items": ["x"], "exclude_items": [""]}]}, "exclude_items"),
    ("recommend", {"users": [{"items": [LONG]}]}, "items"),
    ("recommend", {"users": [{"user_id": LONG, "items": []}]}, "user_id"),
    ("similar_items", {"item_ids": [LONG]}, "item_ids"),
    ("similar_items", {"item_ids": ["x" * 2**20]}, "item_ids"),
    ("similar_items", {"item_ids": ["x"], "k": "3"}, "k"),
    ("similar_items", {"item_ids": [""]}, "item_ids"),
    ("forecast_demand", {"series": [_series("s", history=["1", "2"])]}, "history"),
    ("forecast_demand", {"series": [_series("s", history=[True, False])]}, "history"),
    ("forecast_demand", {"series": [_series("s", start=20260302)]}, "start"),
    ("forecast_demand", {"series": [_series("s", start="20260302")]}, "start"),
    ("forecast_demand", {"series": [_series("s", history=[1e10] * 7)]}, "history"),
    ("forecast_demand", {"series": [_series(LONG)]}, "series_id"),
    ("predict_propensity", {"users": [_user(LONG)]}, "user_id"),
]


@pytest.mark.parametrize("endpoint, body, field", STRICT_CASES)
def test_lax_types_and_long_ids_are_a_400_naming_the_field(url, endpoint, body, field):
    resp = httpx.post(f"{url}/{endpoint}", json=body, timeout=60)
    assert resp.status_code == 400, resp.text[:500]
    assert field in resp.text, resp.text[:500]


def test_integral_prices_and_units_are_still_numbers(url):
    body = {"users": [_user("a", events=[{"item_id": "i", "event_type": "view", "timestamp": "2026-03-01T00:00:00Z", "price": 12}])]}
    assert httpx.post(f"{url}/predict_propensity", json=body, timeout=60).status_code == 200
    assert httpx.post(f"{url}/forecast_demand", json={"series": [_series("s", history=[1, 2, 3])]}, timeout=60).status_code == 200


EXTREMES = [
    ("forecast_demand", {"series": [_series("big", history=[1e9] * 366)]}),
    ("forecast_demand", {"series": [_series("last", start="2199-12-20")]}),
    ("forecast_demand", {"series": [_series("first", start="1970-01-01", history=[])]}),
    ("predict_propensity", {"users": [_user("big", events=[{"item_id": "i", "event_type": "purchase", "timestamp": "2026-03-01T00:00:00Z",
                                                              "price": 1e9, "quantity": 100000}] * 50)]}),
    ("churn_risk", {"users": [_user("big", explain=True, events=[{"item_id": "i", "event_type": "purchase", "timestamp": "2026-03-01T00:00:00Z",
                                                                    "price": 1e9, "quantity": 100000}] * 50)]}),
    ("explain_propensity", {"users": [_user("old", as_of="1970-01-01T00:00:00Z", events=[])]}),
]


@pytest.mark.parametrize("endpoint, body", EXTREMES)
def test_extreme_valid_inputs_answer_finite_json_or_a_400(url, endpoint, body):
    """The largest values the schema admits: a finite answer (strict JSON), or a 400 naming why; never a 5xx."""
    resp = httpx.post(f"{url}/{endpoint}", json=body, timeout=60)
    assert resp.status_code in (200, 400), resp.text[:500]
    answer = _strict_json(resp.text)
    if resp.status_code == 200:
        numbers = []

        def walk(value):
            if isinstance(value, float):
                numbers.append(value)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)
        walk(answer)
        assert all(math.isfinite(v) for v in numbers)


def test_a_400_is_one_log_line_not_a_traceback(server):
    url, log = server
    before = log.read_text()
    for body in ({"series": [_series("late", start="9999-12-31")]}, {"series": [{"series_id": 7}]}, {"series": []}):
        assert httpx.post(f"{url}/forecast_demand", json=body, timeout=60).status_code == 400
    assert httpx.post(f"{url}/recommend", json={"users": [{"items": ["x"]}], "k": 51}, timeout=60).status_code == 400
    new = log.read_text()[len(before):]
    assert "Traceback" not in new, new[-3000:]
    lines = [line for line in new.splitlines() if "/forecast_demand" in line and "400" in line and "status=" not in line]
    assert len(lines) == 3, new[-3000:]


def test_missing_model_is_a_503_that_says_so(tiny_project, registered, tmp_path):
    env = {**service_env(tiny_project, tmp_path), "SHOPSIGHT_CHURN_TAG": "churn:not-registered"}
    with bentoml_server(SERVICE, cwd=tiny_project, env=env, log_dir=tmp_path) as url:
        resp = httpx.post(f"{url}/churn_risk", json={"users": [_user("a")]}, timeout=60)
        assert resp.status_code == 503 and "no churn model" in resp.json()["error"], resp.text
        assert httpx.post(f"{url}/forecast_demand", json={"series": [_series("s")]}, timeout=60).status_code == 200


def test_overload_is_a_503_busy_with_retry_after(tiny_project, registered, tmp_path):
    """A latency budget no batch can meet: BentoML sheds load; every shed request says so and when to retry."""
    env = service_env(tiny_project, tmp_path, max_latency_ms=1)

    async def flood(url: str) -> list[httpx.Response | Exception]:
        # a new connection per request: a pooled keep-alive connection that the server closes while the client
        # reuses it is a client-side race (httpx.ReadError), not the server's answer
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post(f"{url}/predict_propensity", json={"users": [_user(f"u{i}")]}) for i in range(400)),
                                        return_exceptions=True)

    with bentoml_server(SERVICE, cwd=tiny_project, env=env, log_dir=tmp_path) as url:
        outcomes = asyncio.run(flood(url))
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) <= len(outcomes) // 20, f"{len(errors)} requests got no answer: {errors[:3]!r}"
    answers = [o for o in outcomes if not isinstance(o, Exception)]
    statuses = {a.status_code for a in answers}
    assert statuses <= {200, 503}, statuses
    busy = [a for a in answers if a.status_code == 503]
    assert busy, "no request was shed: the test did not overload the server"
    for a in busy:
        assert "busy" in a.json()["error"] and int(a.headers["retry-after"]) >= 1, (a.headers, a.text)
