"""tf.distribute.MultiWorkerMirroredStrategy across two local worker processes (TF_CONFIG, 127.0.0.1, CPU only):
both finish, hold the same weights at the end, and the loss went down; for the task MLP and a recommender encoder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT_S = 240


def free_ports(n: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(tmp_path: Path, args: list[str], n: int = 2) -> list[Path]:
    """Start n workers of `python -m shopsight.distributed_train <args>` with TF_CONFIG; return each one's output
    folder. A worker that fails or hangs is killed by its own PID, and so are the others."""
    ports = free_ports(n)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for i in range(n):
            env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                   "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
            with open(tmp_path / f"worker{i}.log", "w") as log:  # the child keeps its own copy of the handle
                procs.append(subprocess.Popen([sys.executable, "-m", "shopsight.distributed_train", *args, "--out", str(tmp_path / f"w{i}")],
                                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=WORKER_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = "\n".join(f"--- worker {i}\n" + (tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(n))
    assert codes == [0] * n, logs
    return [tmp_path / f"w{i}" for i in range(n)]


def worker_result(out: Path) -> dict:
    with np.load(out / "weights.npz") as z:
        weights = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
    return {**json.loads((out / "history.json").read_text()), "weights": weights}


def assert_trained_together(results: list[dict], rows: int, global_batch: int) -> None:
    """Each worker read only its half of every global batch, yet both end with the same weights: every update was
    the all-reduced gradient of the whole batch (apart, each would have fitted its own half)."""
    a, b = results
    assert a["workers"] == b["workers"] == 2 and {a["worker_index"], b["worker_index"]} == {0, 1}
    per_epoch = rows // global_batch * global_batch
    assert a["local_rows"] == b["local_rows"] == [per_epoch // 2] * len(a["loss"])
    assert len(a["weights"]) == len(b["weights"]) > 0
    for wa, wb in zip(a["weights"], b["weights"]):
        np.testing.assert_array_equal(wa, wb)
    assert a["loss"] == b["loss"]
    assert a["loss"][-1] < a["loss"][0], a["loss"]


def write_params(tmp_path: Path, update: dict) -> None:
    from tests.conftest import deep_update

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_update(raw, update), sort_keys=False))


def test_task_mlp_and_recommender_train_on_two_workers(tmp_path):
    """One pair of workers trains both in turn (TensorFlow allows one multi-worker strategy per process, and each
    process pays TensorFlow's start-up once)."""
    from shopsight.sequences import training_windows

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=512) > 0).astype(np.float32)
    vocab_size = 30  # item 0 is padding; users walk the catalogue in steps of 1 or 2: a learnable next item
    sequences = [np.cumsum(rng.integers(1, 3, size=rng.integers(4, 12))) % (vocab_size - 1) + 1 for _ in range(200)]
    inputs, targets = training_windows([s.astype(np.int32) for s in sequences], 8)
    np.savez(tmp_path / "data.npz", x=x, y=y, inputs=inputs, targets=targets, vocab_size=vocab_size)
    write_params(tmp_path, {
        "propensity": {"mlp": {"epochs": 3, "batch_size": 32, "hidden_units": [8], "learning_rate": 0.01}},
        "recommender": {"models": ["gru"], "epochs": 2, "batch_size": 16, "max_len": 8, "embedding_dim": 8, "rnn_units": 8,
                        "learning_rate": 0.01},
    })
    outs = run_workers(tmp_path, ["mlp", "recommender", "--task", "propensity", "--data", "data.npz"])
    assert_trained_together([worker_result(out / "mlp") for out in outs], len(x), 2 * 32)
    assert_trained_together([worker_result(out / "recommender") for out in outs], len(inputs), 2 * 16)


def test_multi_worker_training_without_tf_config_says_what_to_set(monkeypatch):
    from shopsight.distributed_train import multi_worker_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    multi_worker_strategy.cache_clear()
    try:
        multi_worker_strategy()
    except RuntimeError as exc:
        assert "TF_CONFIG" in str(exc) and "cluster" in str(exc)
    else:
        raise AssertionError("no error without TF_CONFIG")


def test_training_distribute_multi_worker_points_at_the_multi_worker_command():
    """The stages' Keras fit cannot run under MultiWorkerMirroredStrategy with Keras 3 (keras-team/keras#20585): the
    setting fails at once, naming the command that trains across workers."""
    from shopsight.orchestration import distribution_strategy

    try:
        distribution_strategy("multi_worker")
    except ValueError as exc:
        assert "shopsight.distributed_train" in str(exc)
    else:
        raise AssertionError("training.distribute: multi_worker was accepted")
