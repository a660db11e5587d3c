"""`dvc repro` trains and evaluates the recommender; a real `bentoml serve` answers /recommend and /similar_items."""

import contextlib
import json

import httpx
import pytest

from shopsight.config import load_params
from tests.integration.servers import bentoml_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(tiny_project):
    from shopsight.pipeline import register_propensity
    from shopsight.recommender import register_recommender

    with contextlib.chdir(tiny_project):
        params = load_params("params.yaml")
        register_propensity(params)  # the service needs its propensity champion too (a no-op if already registered)
        reg = register_recommender(params)
    return reg


@pytest.fixture(scope="module")
def prediction_log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("recommend-log") / "predictions"


@pytest.fixture(scope="module")
def service_url(tiny_project, registered, prediction_log_dir):
    with bentoml_server("bentos.service:ShopsightService", cwd=tiny_project, env={"SHOPSIGHT_PREDICTION_LOG_DIR": str(prediction_log_dir)}) as url:
        yield url


@pytest.fixture(scope="module")
def catalogue(tiny_project):
    return json.loads((tiny_project / "data" / "sequences" / "item_vocab.json").read_text())["items"]


def test_pipeline_table_has_every_model_baseline_and_the_oracle(tiny_project):
    metrics = json.loads((tiny_project / "metrics" / "recommender.json").read_text())
    assert set(metrics["test"]) == {"gru", "transformer", "popularity", "cooccurrence", "oracle"}
    for row in metrics["test"].values():
        assert 0.0 <= row["ndcg_at_10"] <= row["hr_at_10"] <= 1.0
    assert isinstance(metrics["quality_targets"]["best_vs_popularity"]["met"], bool)
    assert isinstance(metrics["quality_targets"]["best_vs_oracle"]["met"], bool)
    curve = (tiny_project / "plots" / "recommender" / "hr_at_k.csv").read_text().splitlines()
    assert len(curve) == 51 and curve[0].startswith("k,")
    assert (tiny_project / "plots" / "recommender" / "hr_at_k.png").exists()


def test_registered_as_recommender_task(registered):
    assert registered.tag.startswith("recommender:")
    assert registered.status == "champion"


def test_recommend_top_k_with_unknown_ids_and_popularity_fallback(service_url, registered, catalogue):
    body = {
        "users": [
            {"user_id": "a", "items": [catalogue[3], "no-such-item", catalogue[7]]},
            {"user_id": "b", "items": []},
            {"user_id": "c", "items": ["ghost"]},
        ],
        "k": 5,
    }
    resp = httpx.post(f"{service_url}/recommend", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert [o["user_id"] for o in out] == ["a", "b", "c"]
    assert all(len(o["items"]) == 5 for o in out)
    assert out[0]["unknown_items"] == ["no-such-item"] and not out[0]["fallback"]
    assert out[1]["fallback"] and out[2]["fallback"] and out[2]["unknown_items"] == ["ghost"]
    assert [i["item_id"] for i in out[1]["items"]] == [i["item_id"] for i in out[2]["items"]]  # both: most popular
    scores = [i["score"] for i in out[0]["items"]]
    assert scores == sorted(scores, reverse=True)
    assert out[0]["model"] == registered.tag
    assert all(i["item_id"] in catalogue for o in out for i in o["items"])


def test_recommend_excludes_purchased_items_on_request(service_url, catalogue):
    bought = catalogue[0]  # the most popular item: surely in the top 50 without exclusion
    user = {"user_id": "a", "items": [catalogue[2], bought], "event_types": ["view", "purchase"]}
    keep = httpx.post(f"{service_url}/recommend", json={"users": [user], "k": 50, "exclude_purchased": False}, timeout=30).json()
    drop = httpx.post(f"{service_url}/recommend", json={"users": [user], "k": 50, "exclude_purchased": True}, timeout=30).json()
    assert bought in [i["item_id"] for i in keep[0]["items"]]
    assert bought not in [i["item_id"] for i in drop[0]["items"]]


def test_similar_items_from_the_embeddings(service_url, catalogue):
    resp = httpx.post(f"{service_url}/similar_items", json={"item_ids": [catalogue[1], "ghost"], "k": 4}, timeout=30)
    assert resp.status_code == 200, resp.text
    known, unknown = resp.json()
    assert known["known"] and len(known["similar"]) == 4 and catalogue[1] not in [s["item_id"] for s in known["similar"]]
    assert not unknown["known"] and unknown["similar"] == []


def test_every_recommendation_and_similar_items_answer_is_logged(service_url, prediction_log_dir, registered, catalogue):
    from shopsight.prediction_log import read_prediction_log

    users = [{"user_id": "log-a", "items": [catalogue[3], "no-such-item"]}, {"user_id": "log-b", "items": []}]
    recs = httpx.post(f"{service_url}/recommend", json={"users": users, "k": 4}, timeout=30).json()
    similar = httpx.post(f"{service_url}/similar_items", json={"item_ids": [catalogue[5], "log-ghost"], "k": 3}, timeout=30).json()
    frame = read_prediction_log(prediction_log_dir)  # written and flushed before the answers left
    logged = frame[frame["user_id"].isin(["log-a", "log-b"])].set_index("user_id")
    assert len(logged) == 2 and (logged["endpoint"] == "recommend").all() and (logged["model"] == registered.tag).all()
    for answer in recs:
        record = logged.loc[answer["user_id"]]
        assert record["output"]["items"] == [i["item_id"] for i in answer["items"]]
        assert record["output"]["scores"] == pytest.approx([i["score"] for i in answer["items"]], abs=1e-5)
        assert record["output"]["fallback"] == answer["fallback"]
    assert logged.loc["log-a", "features"] == {"n_items": 2, "n_known": 1}
    assert logged.loc["log-b", "features"] == {"n_items": 0, "n_known": 0}
    sim = frame[frame["endpoint"] == "similar_items"]
    by_item = {r["features"]["item_id"]: r for _, r in sim.iterrows()}
    assert by_item["log-ghost"]["features"]["known"] is False and by_item["log-ghost"]["output"]["items"] == []
    assert by_item[catalogue[5]]["output"]["items"] == [s["item_id"] for s in similar[0]["similar"]]


@pytest.mark.parametrize(
    "path, body, expect",
    [
        ("recommend", {"users": [{"items": ["x"]}], "k": 51}, "k=51"),
        ("recommend", {"users": [{"items": ["x"]}], "k": 0}, "k=0"),
        ("recommend", {"users": [{"items": ["x", "y"], "event_types": ["view"]}]}, "event_types"),
        ("recommend", {"users": [{"items": ["x"], "event_types": ["teleport"]}]}, "event_types"),
        ("recommend", {"users": "everyone"}, "users"),
        ("similar_items", {"item_ids": ["x"], "k": 1000}, "k=1000"),
        ("similar_items", {"k": 3}, "item_ids"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(service_url, path, body, expect):
    resp = httpx.post(f"{service_url}/{path}", json=body, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert expect in resp.text
