"""RequestGuard: API key on POST routes (401), bounded bodies (413), probes stay open."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from shopsight.security import RequestGuard, key_matches


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


async def ready(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def client(monkeypatch, key: str | None, max_body_bytes: int = 1000) -> TestClient:
    if key is None:
        monkeypatch.delenv("TEST_API_KEY", raising=False)
    else:
        monkeypatch.setenv("TEST_API_KEY", key)
    app = Starlette(routes=[Route("/predict", echo, methods=["POST"]), Route("/readyz", ready)])
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes, api_key_env="TEST_API_KEY")
    return TestClient(app)


def test_without_a_key_configured_posts_are_open(monkeypatch):
    assert client(monkeypatch, None).post("/predict", content=b"{}").status_code == 200


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"X-API-Key": "wrong"}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic s3cret"}, 401),
    ({"X-API-Key": "s3cret"}, 200),
    ({"Authorization": "Bearer s3cret"}, 200),
])
def test_api_key_is_required_on_posts(monkeypatch, headers, status):
    resp = client(monkeypatch, "s3cret").post("/predict", content=b"{}", headers=headers)
    assert resp.status_code == status
    if status == 401:
        assert "API key" in resp.json()["error"] and "WWW-Authenticate" in resp.headers


def test_probes_need_no_key(monkeypatch):
    assert client(monkeypatch, "s3cret").get("/readyz").status_code == 200


def test_body_over_the_limit_is_413_declared_or_streamed(monkeypatch):
    c = client(monkeypatch, None, max_body_bytes=100)
    assert c.post("/predict", content=b"x" * 100).json() == {"bytes": 100}
    resp = c.post("/predict", content=b"x" * 101)
    assert resp.status_code == 413 and "max_body_kb" in resp.json()["error"]
    streamed = c.post("/predict", content=iter([b"x" * 60, b"x" * 60]))  # chunked: no Content-Length
    assert streamed.status_code == 413


@pytest.mark.parametrize("content_type, status", [
    ("application/json", 200), ("application/json; charset=utf-8", 200), ("application/problem+json", 200),
    ("multipart/form-data; boundary=x", 415), ("text/plain", 415), ("application/x-www-form-urlencoded", 415),
])
def test_only_json_bodies_are_accepted(monkeypatch, content_type, status):
    resp = client(monkeypatch, None).post("/predict", content=b"{}", headers={"content-type": content_type})
    assert resp.status_code == status
    if status == 415:
        assert "application/json" in resp.json()["error"]


def test_bad_content_length_is_400(monkeypatch):
    resp = client(monkeypatch, None).post("/predict", content=b"{}", headers={"Content-Length": "-5"})
    assert resp.status_code == 400


def test_key_comparison():
    assert key_matches("abc", "abc")
    assert not key_matches("abd", "abc") and not key_matches(None, "abc") and not key_matches("", "abc")
    assert not key_matches("\udcff", "abc")  # undecodable header bytes do not crash the comparison


# ---- UnavailableAnswer: 503s that say why and when to retry ----


async def shed(_: Request) -> JSONResponse:
    return JSONResponse({"error": "An unexpected error has occurred, please check the server log."}, status_code=503)


async def broken(_: Request) -> JSONResponse:
    return JSONResponse({"error": "An unexpected error has occurred, please check the server log."}, status_code=500)


def unavailable_client() -> TestClient:
    from shopsight.security import UnavailableAnswer

    def reason(path: str):
        return {"/churn": ("no churn model in the store", None), "/loading": ("still loading", 5)}.get(path)

    app = Starlette(routes=[Route(p, f, methods=["POST"]) for p, f in (("/predict", echo), ("/shed", shed), ("/broken", broken),
                                                                        ("/churn", echo), ("/loading", echo))])
    app.add_middleware(UnavailableAnswer, retry_after_s=2, unavailable=reason)
    return TestClient(app)


def test_a_shed_request_is_a_503_busy_with_retry_after():
    resp = unavailable_client().post("/shed", content=b"{}")
    assert resp.status_code == 503 and "busy" in resp.json()["error"] and resp.headers["retry-after"] == "2"
    assert "unexpected" not in resp.text


def test_unavailable_endpoints_say_why_and_others_pass_through():
    c = unavailable_client()
    churn = c.post("/churn", content=b"{}")
    assert churn.status_code == 503 and churn.json() == {"error": "no churn model in the store"} and "retry-after" not in churn.headers
    loading = c.post("/loading", content=b"{}")
    assert loading.status_code == 503 and loading.headers["retry-after"] == "5"
    assert c.post("/predict", content=b"12345").json() == {"bytes": 5}
    assert c.post("/broken", content=b"{}").status_code == 500  # a server fault is not "busy"
