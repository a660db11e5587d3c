"""`bentoml build` then `bentoml serve <bento tag>`: the BUILT bento (not the source tree) answers."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from shopsight.config import load_params
from tests.integration.servers import bentoml_server

pytestmark = pytest.mark.integration


def test_built_bento_pins_the_lock_carries_the_champion_and_answers(tiny_project, tmp_path):
    import bentoml

    from shopsight.packaging import build_bento
    from shopsight.pipeline import register_propensity

    with contextlib.chdir(tiny_project):
        register_propensity(load_params("params.yaml"))
        tag = build_bento(tiny_project)
    from shopsight.registry import champion_tag

    champion = champion_tag("propensity")
    bento = bentoml.get(tag)
    assert champion in {str(m.tag) for m in bento.info.all_models}
    pinned = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text().split()
    locked = (tiny_project / "requirements.lock").read_text().split()
    assert {r for r in pinned if not r.startswith("#")} == {r for r in locked if not r.startswith("#")}  # bentoml adds its own (same) pin

    # Served from an unrelated directory, so nothing can come from the project's source tree.
    env = {"SHOPSIGHT_PREDICTION_LOG_DIR": str(tmp_path / "predictions"), "SHOPSIGHT_API_KEY": ""}
    with bentoml_server(tag, cwd=tmp_path, env=env) as url:
        body = {"users": [{"user_id": "a", "events": [{"item_id": "i1", "event_type": "view", "timestamp": "2026-03-09T10:00:00Z"}],
                           "as_of": "2026-03-10T00:00:00Z"}]}
        resp = httpx.post(f"{url}/predict_propensity", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.json()[0]["model"] == champion
