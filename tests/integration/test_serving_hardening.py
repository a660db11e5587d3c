"""A real `bentoml serve` under attack and under load: fuzzing, malformed input, API key, body limit,
readiness during warm-up, 64 concurrent clients, and a prediction log with one record per answer."""

from __future__ import annotations

import contextlib
import asyncio
import re
import subprocess
import sys

import httpx
import pytest

from shopsight.config import load_params
from shopsight.prediction_log import read_prediction_log
from tests.integration.servers import bentoml_server, service_env

pytestmark = pytest.mark.integration

API_KEY = "test-key-9f2c"  # generated for the test; a real key lives only in the environment
SERVICE = "bentos.service:ShopsightService"


@pytest.fixture(scope="module")
def registered(tiny_project):
    """Every model the service can serve, so that every endpoint answers (and is fuzzed), whatever the file order."""
    from shopsight.churn import register_churn
    from shopsight.demand import register_demand
    from shopsight.pipeline import register_propensity
    from shopsight.recommender import register_recommender

    with contextlib.chdir(tiny_project):
        params = load_params("params.yaml")
        propensity = register_propensity(params)
        register_churn(params), register_demand(params), register_recommender(params)
        return propensity


@pytest.fixture(scope="module")
def guarded(tiny_project, registered, tmp_path_factory):
    """The service with an API key and a small body limit."""
    logs = tmp_path_factory.mktemp("guarded-log")
    env = service_env(tiny_project, logs, API_KEY, max_body_kb=64)
    with bentoml_server(SERVICE, cwd=tiny_project, env=env, log_dir=logs) as url:
        yield url


def _user(uid: str, n: int = 3) -> dict:
    events = [{"item_id": f"i{k}", "event_type": "view", "timestamp": f"2026-03-0{k + 1}T10:00:00Z", "price": 12.5} for k in range(n)]
    return {"user_id": uid, "events": events, "as_of": "2026-03-10T00:00:00Z"}


KEY = {"X-API-Key": API_KEY}


def test_api_key_required_on_predictions_not_on_probes(guarded):
    body = {"users": [_user("a")]}
    assert httpx.post(f"{guarded}/predict_propensity", json=body, timeout=30).status_code == 401
    wrong = httpx.post(f"{guarded}/predict_propensity", json=body, headers={"X-API-Key": "nope"}, timeout=30)
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
    assert httpx.post(f"{guarded}/predict_propensity", json=body, headers=KEY, timeout=30).status_code == 200
    bearer = httpx.post(f"{guarded}/predict_propensity", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert bearer.status_code == 200
    for probe in ("/readyz", "/livez"):
        assert httpx.get(f"{guarded}{probe}", timeout=10).status_code == 200


DEEP = b'{"users": ' + b"[" * 5000 + b"]" * 5000 + b"}"
BIG_NUMBER = b'{"users": [{"user_id": "a", "events": [{"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "price": 1' + b"0" * 400 + b"}]}]}"


@pytest.mark.parametrize("body, needle", [
    (b'{"users": []}', "users"),                                              # empty list
    (b'{"users": [{"user_id": "a", "events": [{"item_id": "i", "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "price": NaN}]}]}', "price"),
    (BIG_NUMBER, "price"),                                                    # huge number
    (b'{"users": [{"user_id": 7}]}', "user_id"),                              # wrong type
    (b'{"users": [{"events": []}]}', "user_id"),                              # missing field
    (b'{"users": [{"user_id": "\xff\xfe"}]}', "JSON"),                       # invalid UTF-8
    (DEEP, "recursion"),                                                      # deeply nested JSON
    (b'{"users": [{"user_id": "a", "events": [{"item_id": "i", "event_type": "view", "timestamp": "yesterday"}]}]}', "timestamp"),
    (b'{"users": [{"user_id": "a", "extra": 1}]}', "extra"),                  # unknown field
    (b'{"users": [{"user_id": "a", "as_of": "2859-05-25T11:27:12Z"}]}', "as_of"),  # found by schemathesis: was a 500
    (b'{"users": [{"user_id": "a", "as_of": "0001-01-01T00:00:01+00:04"}]}', "as_of"),  # likewise (OverflowError)
    (b"", "users"),
    (b"null", "object"),
])
def test_malformed_input_is_a_4xx_with_a_message(guarded, body, needle):
    resp = httpx.post(f"{guarded}/predict_propensity", content=body, headers={**KEY, "content-type": "application/json"}, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert needle.lower() in resp.text.lower()


def test_too_many_users_and_too_large_bodies_are_rejected(guarded):
    limit = load_params().serving.max_users_per_request
    many = {"users": [{"user_id": f"u{i}"} for i in range(limit + 1)]}
    resp = httpx.post(f"{guarded}/predict_propensity", json=many, headers=KEY, timeout=30)
    assert resp.status_code in (400, 413) and ("users" in resp.text or "max_body_kb" in resp.text)
    big = {"users": [_user(f"u{i}", n=20) for i in range(200)]}  # ~300 KiB > the 64 KiB set for this server
    resp = httpx.post(f"{guarded}/predict_propensity", json=big, headers=KEY, timeout=30)
    assert resp.status_code == 413 and "max_body_kb" in resp.json()["error"]


def test_schemathesis_finds_no_server_error(guarded, tmp_path):
    """Property-based requests generated from the service's own OpenAPI schema, valid and invalid, to every endpoint
    (the `registered` fixture stores every model, so none answers 503 "no model")."""
    import xml.etree.ElementTree as ET

    schema = httpx.get(f"{guarded}/docs.json", timeout=30).json()
    endpoints = {path for path, ops in schema["paths"].items() if "post" in ops}
    assert {"/churn_risk", "/forecast_demand", "/recommend", "/similar_items", "/predict_propensity"} <= endpoints
    report = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{guarded}/docs.json", "--checks", "not_a_server_error",
         "--max-examples", "40", "--seed", "8", "--header", f"X-API-Key: {API_KEY}", "--request-timeout", "30",
         "--phases", "examples,coverage,fuzzing", "--report", "junit", "--report-junit-path", str(report), "--no-color"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    cases = sum(int(n) for n in re.findall(r"(\d+) generated", proc.stdout)) or sum(int(n) for n in re.findall(r"(\d+) test cases", proc.stdout))
    assert cases >= 200, proc.stdout[-3000:]
    fuzzed = {case.get("name", "") for case in ET.parse(report).iter("testcase")}
    missed = {e for e in endpoints if not any(name.endswith(f"POST {e}") for name in fuzzed)}
    skipped = [case.get("name") for case in ET.parse(report).iter("testcase") if case.find("skipped") is not None]
    assert not missed and not skipped, (missed, skipped, sorted(fuzzed))


@pytest.fixture(scope="module")
def slow_warmup(tiny_project, registered, tmp_path_factory):
    """The service with a long warm-up and no API key, started without waiting for readiness."""
    logs = tmp_path_factory.mktemp("load-log")
    # ~10 ms a round (features of 1..256 users in memory + compiled call): several seconds of warm-up
    env = service_env(tiny_project, logs, "", warmup_rounds=500)
    return logs, env


def test_not_ready_until_warm_then_load_with_every_answer_logged(tiny_project, slow_warmup):
    logs, env = slow_warmup
    answered: list[int] = []
    with bentoml_server(SERVICE, cwd=tiny_project, env=env, log_dir=logs, wait_for="/livez") as url:
        # Alive at once, ready only after the models are loaded and warmed up.
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        early = httpx.post(f"{url}/predict_propensity", json={"users": [_user("early")]}, timeout=30)
        assert early.status_code == 503
        for _ in range(240):
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                break
            asyncio.run(asyncio.sleep(0.5))
        else:
            pytest.fail("never became ready")
        statuses = asyncio.run(_load(f"{url}/predict_propensity", n=2000, concurrency=64))
        answered = [s for s in statuses if s == 200]
        assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
    # The server was stopped (SIGTERM) right after the last answer: every answered request is in the log.
    frame = read_prediction_log(logs / "predictions", endpoint="predict_propensity")
    assert len(frame) == len(answered) == 2000
    assert frame["user_id"].str.startswith("load-").all() and frame["user_id"].is_unique
    assert frame["output"].map(lambda o: 0.0 <= o["probability"] <= 1.0).all()
    assert frame["features"].map(len).nunique() == 1


MAX_BUSY_RETRIES = 5
MAX_BUSY_ANSWERS = 200  # 10% of the load may be told to come back: more is a failure, not a busy machine


async def _load(url: str, n: int, concurrency: int) -> list[int]:
    statuses: list[int] = []
    busy: list[int] = []
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            for i in queue:
                body = {"users": [_user(f"load-{i}", n=1 + i % 5)]}
                transport_retries = 0
                for _ in range(MAX_BUSY_RETRIES + 2):
                    try:
                        resp = await client.post(url, json=body)
                    except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                        # A pooled keep-alive connection closed under the client before any answer: clients retry
                        # that once. A request answered twice would show up as a duplicate user id in the log.
                        transport_retries += 1
                        if transport_retries == 2:
                            statuses.append(-1)
                            print("load error:", repr(exc))
                            break
                        continue
                    except httpx.HTTPError as exc:
                        statuses.append(-1)
                        print("load error:", repr(exc))
                        break
                    if resp.status_code == 503 and "retry-after" in resp.headers and len(busy) < MAX_BUSY_ANSWERS:
                        # shed by the adaptive batcher (a busy machine): a well-behaved client waits as told and
                        # retries; the shed request was never answered, so it is not in the log either
                        busy.append(i)
                        await asyncio.sleep(float(resp.headers["retry-after"]))
                        continue
                    statuses.append(resp.status_code)
                    break
                else:
                    statuses.append(-2)  # still shed after every retry

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if busy:
        print(f"{len(busy)} requests were shed with 503 + Retry-After and answered on retry")
    return statuses
