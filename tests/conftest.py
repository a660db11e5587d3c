"""Shared fixtures: isolated tool homes, tiny canonical events built in code, a tiny-params project copy."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Isolate every tool's home before any of them is imported (BentoML and Prefect read these at import).
_HOMES = Path(tempfile.mkdtemp(prefix="shopsight-test-homes-"))
atexit.register(shutil.rmtree, _HOMES, ignore_errors=True)  # each test process removes its own homes when it exits
os.environ["BENTOML_HOME"] = str(_HOMES / "bentoml")
os.environ["PREFECT_HOME"] = str(_HOMES / "prefect")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
from shopsight.prefect_setup import apply_prefect_defaults  # noqa: E402  (telemetry off, a startup timeout for busy CI)

apply_prefect_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DO_NOT_TRACK", "1")  # BentoML usage analytics off (no network here)

from shopsight.config import deep_update  # noqa: E402,F401  (tests import it from here)

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Small enough for seconds per stage, big enough for both classes in every split.
TINY_PARAMS = {
    "data": {"synthetic": {"n_users": 600, "n_items": 120, "n_categories": 6, "days": 84, "seed": 11}},
    "features": {"windows_days": [7, 28], "horizon_days": 7, "cutoff_step_days": 7, "n_train_cutoffs": 2},
    "propensity": {
        "mlp": {"epochs": 3, "batch_size": 128, "hidden_units": [16]},
        "lightgbm": {"num_boost_round": 60, "early_stopping_rounds": 10},
        "explain": {"ig_steps": 8, "global_sample": 200},
    },
    "churn": {"horizon_days": 7, "mlp": {"epochs": 3, "batch_size": 128, "hidden_units": [16]}, "explain": {"ig_steps": 8, "global_sample": 200}},
    "recommender": {"models": ["gru", "transformer"], "epochs": 1, "max_len": 20, "embedding_dim": 16, "rnn_units": 16,
                    "transformer": {"depth": 1, "heads": 2, "width": 32, "dropout": 0.1}},
    "demand": {"horizon_days": 7, "input_days": 14, "moving_average_days": 14, "window_step_days": 2, "model": {"epochs": 2, "filters": 8, "hidden_units": 16}},
}


def write_params(project: Path, update: dict) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(deep_update(params, update), sort_keys=False))


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_project(dest: Path) -> Path:
    """A fresh git repository holding the project's tracked and untracked-but-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO_ROOT / rel
        if src.is_file() and not rel.startswith("tests/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "copy"], dest)
    return dest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's `--dist loadgroup` (`make test` runs two workers): every test on the shared tiny
    project runs in one worker (its `dvc repro` is built once, and those tests write into it), every other file in
    one worker (its module fixtures are set up once). Without xdist the marks do nothing.

    The loadgroup scheduler groups by a `@group` suffix of the node id, which pytest-xdist 3.8 writes to
    `item._nodeid`; pytest 9 reads node ids from `item._id`, so without the lines below every test was its own
    group (measured: the tiny project built on both workers). Harmless once xdist sets it itself."""
    from _pytest.nodeid import coerce_node_id

    loadgroup = bool(getattr(config.option, "loadgroup", False))
    for item in items:
        group = "tiny_project" if "tiny_project" in item.fixturenames else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
        if loadgroup and not item.nodeid.endswith(f"@{group}"):
            item._id = coerce_node_id(f"{item.nodeid}@{group}")


@pytest.fixture(scope="session", autouse=True)
def _stop_temporary_prefect_servers():
    """Stop Prefect's temporary API servers while pytest's output capture is still open.

    Prefect stops them at interpreter exit (atexit), after pytest has closed the stream its log handler holds:
    that printed a `--- Logging error --- ValueError: I/O operation on closed file` traceback after the summary.
    """
    yield
    import sys as _sys

    server_module = _sys.modules.get("prefect.server.api.server")
    if server_module is not None:
        for server in list(server_module.SubprocessASGIServer._instances.values()):
            server.stop()
    # A server whose start failed inside prefect_test_harness is no longer listed, and its atexit stop would log
    # to the closed capture stream: the only logging left after the session, so logging errors are not reported.
    import logging

    logging.raiseExceptions = False


def _reproduced_tiny_project(tmp_path_factory, config) -> tuple[Path, Path]:
    """The tiny project reproduced once per test run, whatever the number of xdist workers: (working copy, pristine
    copy). The first worker to ask builds it behind a file lock in the directory the workers share; the other waits.
    The working copy belongs to the tests of the "tiny_project" group (one worker: they write into it); the pristine
    copy is never written, so tests that only copy the reproduced project can run in the other worker meanwhile."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if hasattr(config, "workerinput"):  # an xdist worker: the parent is shared by the workers of this run
        root = root.parent
    work, pristine, done = root / "tiny-project", root / "tiny-project-pristine", root / "tiny-project.done"
    with FileLock(str(root / "tiny-project.lock")):
        if not done.exists():
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(pristine, ignore_errors=True)
            work.mkdir(parents=True)
            copy_project(work)
            write_params(work, TINY_PARAMS)
            run([sys.executable, "-m", "dvc", "repro"], work)
            shutil.copytree(work, pristine, symlinks=True, ignore=shutil.ignore_patterns("tmp"))  # .dvc/tmp: locks
            done.touch()
    return work, pristine


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory, request) -> Path:
    """A project copy with tiny params, `dvc repro` already run once (shared by the integration tests, which write
    into it: they all run in one xdist worker)."""
    return _reproduced_tiny_project(tmp_path_factory, request.config)[0]


@pytest.fixture(scope="session")
def tiny_project_pristine(tmp_path_factory, request) -> Path:
    """The reproduced tiny project as `dvc repro` left it, for tests that copy it and work on the copy: never write here."""
    return _reproduced_tiny_project(tmp_path_factory, request.config)[1]


def make_events(rows: list[tuple]) -> pd.DataFrame:
    """Canonical events from (user, item, event_type, ISO timestamp[, price[, category[, session]]]) tuples."""
    records = []
    for r in rows:
        user, item, etype, ts = r[:4]
        records.append(
            {
                "user_id": user,
                "item_id": item,
                "event_type": etype,
                "timestamp": pd.Timestamp(ts, tz="UTC"),
                "session_id": r[6] if len(r) > 6 else None,
                "category": r[5] if len(r) > 5 else "c1",
                "price": r[4] if len(r) > 4 else 10.0,
                "quantity": 1,
            }
        )
    frame = pd.DataFrame(records)
    from shopsight.schema import EVENT_TYPES
    from shopsight.sessions import assign_sessions

    frame["event_type"] = pd.Categorical(frame["event_type"], categories=list(EVENT_TYPES))
    for col in ("user_id", "item_id", "category", "session_id"):
        frame[col] = frame[col].astype("string")
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
    frame["session_id"] = assign_sessions(frame)
    return frame
