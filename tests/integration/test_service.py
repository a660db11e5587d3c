"""A real `bentoml serve` of bentos/service.py (and a real `bentoml build`) against a registered model."""

import contextlib

import httpx
import pytest

from shopsight.config import load_params
from tests.integration.servers import bentoml_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(tiny_project):
    from shopsight.pipeline import register_propensity

    with contextlib.chdir(tiny_project):
        reg = register_propensity(load_params("params.yaml"))
    return reg


@pytest.fixture(scope="module")
def service_url(tiny_project, registered):
    with bentoml_server("bentos.service:ShopsightService", cwd=tiny_project) as url:
        yield url


def _user(uid, n_views=3, purchase=True):
    events = [{"item_id": f"i{k}", "event_type": "view", "timestamp": f"2026-03-0{k + 1}T10:00:00Z", "price": 12.5} for k in range(n_views)]
    if purchase:
        events.append({"item_id": "i1", "event_type": "purchase", "timestamp": "2026-03-05T10:00:00", "price": 12.5, "category": "c1"})
    return {"user_id": uid, "events": events, "as_of": "2026-03-10T00:00:00Z"}


def test_scores_a_batch_of_users_with_probabilities(service_url, registered):
    body = {"users": [_user("a"), _user("b", n_views=0, purchase=False), {"user_id": "new"}]}
    resp = httpx.post(f"{service_url}/predict_propensity", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert [o["user_id"] for o in out] == ["a", "b", "new"]
    assert all(0.0 <= o["probability"] <= 1.0 for o in out)
    assert [o["recent_activity"] for o in out] == [True, False, False]
    assert out[0]["model"] == registered.tag


@pytest.mark.parametrize(
    "body, field",
    [
        ({"users": [{"user_id": "a", "events": [{"item_id": "i", "event_type": "teleport", "timestamp": "2026-01-01T00:00:00Z"}]}]}, "event_type"),
        ({"users": [{"user_id": "a", "events": [{"item_id": "i", "event_type": "view"}]}]}, "timestamp"),
        ({"users": [{"events": []}]}, "user_id"),
        ({"users": [{"user_id": "a", "events": [{"item_id": "i", "event_type": "view", "timestamp": "2026-01-01", "price": -3}]}]}, "price"),
        ({"users": "everyone"}, "users"),
    ],
)
def test_malformed_requests_get_a_4xx_naming_the_field(service_url, body, field):
    resp = httpx.post(f"{service_url}/predict_propensity", json=body, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert field in resp.text


def test_non_json_body_is_a_4xx(service_url):
    resp = httpx.post(f"{service_url}/predict_propensity", content=b"\xff\xfe not json", headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text


def test_bentoml_build_packages_the_champion(tiny_project, registered):
    from shopsight.packaging import build_bento

    with contextlib.chdir(tiny_project):
        tag = build_bento(tiny_project)
    import bentoml

    bento = bentoml.get(tag)
    assert registered.tag in {str(m.tag) for m in bento.info.all_models}


def test_propensity_also_answers_the_calibrated_probability_that_explain_gives(service_url, tiny_project):
    body = {"users": [_user("a"), _user("b", n_views=1)]}
    scored = httpx.post(f"{service_url}/predict_propensity", json=body, timeout=30).json()
    explained = httpx.post(f"{service_url}/explain_propensity", json=body, timeout=30).json()
    assert [s["calibrated_probability"] for s in scored] == pytest.approx([e["probability"] for e in explained], rel=1e-5)
    if load_params(tiny_project / "params.yaml").propensity.calibration.method != "none":
        assert any(abs(s["calibrated_probability"] - s["probability"]) > 1e-6 for s in scored)
