"""Model registry on top of the BentoML model store: register with lineage, champion gate, list, promote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

INDEX_NAME = "shopsight-registry.json"


@dataclass(frozen=True)
class Registration:
    tag: str
    status: str  # champion | challenger
    reason: str


def bentoml_home() -> Path:
    return Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml")).expanduser()


def _index_path() -> Path:
    return bentoml_home() / INDEX_NAME


def load_index() -> dict[str, Any]:
    path = _index_path()
    if not path.exists():
        return {"tasks": {}}
    return json.loads(path.read_text())


def _save_index(index: dict[str, Any]) -> None:
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".registry-")
    with os.fdopen(fd, "w") as fh:
        json.dump(index, fh, indent=2)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written index


def git_revision(cwd: Path | None = None) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def data_hash(events_path: Path = Path("data/events.parquet"), lock_path: Path = Path("dvc.lock")) -> str:
    """The DVC md5 of the events file from dvc.lock, or the file's own md5 when the lock does not list it."""
    if lock_path.exists():
        lock = yaml.safe_load(lock_path.read_text()) or {}
        for stage in (lock.get("stages") or {}).values():
            for out in stage.get("outs", []) or []:
                if out.get("path") == str(events_path) and out.get("md5"):
                    return f"dvc:{out['md5']}"
    if events_path.exists():
        digest = hashlib.md5()
        with open(events_path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return f"md5:{digest.hexdigest()}"
    return "unknown"


def champion_tag(task: str) -> str | None:
    return load_index()["tasks"].get(task, {}).get("champion")


def register_model(
    task: str,
    model_dir: Path,
    metrics: dict[str, Any],
    params: dict[str, Any],
    *,
    main_metric: str,
    model_key: str,
    min_improvement: float = 0.0,
    lineage: dict[str, Any] | None = None,
) -> Registration:
    """Copy model_dir into the BentoML store as `<task>:<version>` with metrics and lineage in its metadata.

    The new model becomes the champion when there is none or when its test `main_metric` beats the
    champion's by at least `min_improvement`; otherwise it is kept as a challenger.
    """
    import bentoml

    score = float(metrics["test"][model_key][main_metric])
    lineage = {
        "git_revision": git_revision(),
        "data_hash": data_hash(),
        "registered_at": datetime.now(timezone.utc).isoformat(),
        **(lineage or {}),
    }
    metadata = {"task": task, "main_metric": main_metric, "score": score, "metrics": metrics, "params": params, "lineage": lineage}
    with bentoml.models.create(task, labels={"task": task, "framework": "keras"}, metadata=_jsonable(metadata)) as bento_model:
        for item in Path(model_dir).iterdir():
            target = Path(bento_model.path) / item.name
            shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
    tag = str(bento_model.tag)

    index = load_index()
    entry = index["tasks"].setdefault(task, {"champion": None, "history": [], "models": {}})
    current = entry.get("champion")
    current_score = entry["models"].get(current, {}).get("score") if current else None
    if current is None:
        status, reason = "champion", "first model for this task"
    elif score >= current_score + min_improvement:
        status, reason = "champion", f"{main_metric} {score:.4f} >= champion {current_score:.4f} + {min_improvement}"
    else:
        status, reason = "challenger", f"{main_metric} {score:.4f} < champion {current_score:.4f} + {min_improvement}"
    entry["models"][tag] = {"status": status, "score": score, "main_metric": main_metric, "registered_at": lineage["registered_at"]}
    if status == "champion":
        if current:
            entry["models"][current]["status"] = "retired"
        entry["champion"] = tag
        entry["history"].append(tag)
    _save_index(index)
    return Registration(tag=tag, status=status, reason=reason)


def list_models(task: str | None = None) -> list[dict[str, Any]]:
    """Every registered version with its status and score, newest first."""
    rows = []
    for name, entry in load_index()["tasks"].items():
        if task and name != task:
            continue
        for tag, info in entry["models"].items():
            rows.append({"task": name, "tag": tag, **info})
    return sorted(rows, key=lambda r: r["registered_at"], reverse=True)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
