"""The DVC graph, single-stage runs, the training flow's retries and gate, and trigger_retrain, on a toy DVC project.

The toy project has real DVC stages that take milliseconds (no TensorFlow), so the whole orchestration path
(DVC graph -> one Prefect task per stage -> gate -> registry) runs for real in seconds.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from shopsight import registry
from shopsight.orchestration import StageFailed, dask_address, pipeline_stages, run_stage
from tests.conftest import run

TOY_SCRIPT = '''
import json, pathlib, sys, yaml
step = sys.argv[1]
toy = yaml.safe_load(open("toy.yaml"))
if step == "prepare":
    pathlib.Path("data.txt").write_text("rows\\n")
elif step == "flaky":
    # fails `fail_times` times (counted outside DVC's outputs), then succeeds: a transient failure
    counter = pathlib.Path("attempts.txt")
    attempts = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(attempts + 1))
    if attempts < toy["fail_times"]:
        sys.exit(f"transient failure {attempts + 1}")
    pathlib.Path("flaky.txt").write_text("ok")
elif step == "slow":
    # the first time: leave a half-written output and hang (the test kills the run here)
    out = pathlib.Path("slow.txt")
    if not pathlib.Path("slow-started").exists():
        pathlib.Path("slow-started").write_text("1")
        out.write_text("half")
        import time; time.sleep(600)
    out.write_text("done")
elif step == "train":
    pathlib.Path("model").mkdir(exist_ok=True)
    pathlib.Path("model/model.bin").write_text(f"score={toy['score']}")
elif step == "evaluate":
    score = float(pathlib.Path("model/model.bin").read_text().split("=")[1])
    pathlib.Path("metrics.json").write_text(json.dumps({m: {"toy": {"roc_auc": score, "log_loss": 0.5}} for m in ("valid", "test")}))
'''

# Listed out of order on purpose: the run order must come from the graph, not from the file.
TOY_DVC = """
stages:
  evaluate:
    cmd: python toy.py evaluate
    deps: [toy.py, model]
    metrics: [{metrics.json: {cache: false}}]
  train:
    cmd: python toy.py train
    deps: [toy.py, data.txt]
    params: [{toy.yaml: [score]}]
    outs: [model]
  flaky:
    cmd: python toy.py flaky
    deps: [data.txt]
    params: [{toy.yaml: [fail_times]}]
    outs: [flaky.txt]
  prepare:
    cmd: python toy.py prepare
    deps: [toy.py]
    outs: [data.txt]
"""


def register_toy(params):
    """A registration entry for the toy project (what REGISTRATIONS entries look like for real tasks)."""
    metrics = json.loads(Path("metrics.json").read_text())
    task = os.environ["TOY_TASK"]
    return registry.register_model(
        task, Path("model"), metrics, {}, main_metric="roc_auc", model_key="toy", gate=params.registry.gate_for(task)
    )


def make_toy_project(root: Path, *, score: float = 0.7, fail_times: int = 0, retries: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "toy.py").write_text(TOY_SCRIPT)
    (root / "dvc.yaml").write_text(TOY_DVC)
    (root / "toy.yaml").write_text(yaml.safe_dump({"score": score, "fail_times": fail_times}))
    (root / "params.yaml").write_text(
        yaml.safe_dump({"orchestration": {"stage_retries": retries, "stage_retry_delay_seconds": 0, "build_bento": False},
                        "registry": {"gate": {"metric": "roc_auc", "min_improvement": 0.01}}})
    )
    (root / ".gitignore").write_text("attempts.txt\nslow-started\n")
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "config", "cache.dir", str(root.parent / f"cache-{root.name}")], root)
    return root


def set_score(project: Path, score: float) -> None:
    toy = yaml.safe_load((project / "toy.yaml").read_text())
    (project / "toy.yaml").write_text(yaml.safe_dump({**toy, "score": score}))


@pytest.fixture
def toy(tmp_path) -> Path:
    return make_toy_project(tmp_path / "toy")


@pytest.fixture
def toy_task(monkeypatch) -> str:
    task = f"toy{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TOY_TASK", task)
    import flows.training

    monkeypatch.setattr(flows.training, "REGISTRATIONS", [("toy", "tests.test_orchestration:register_toy")])
    return task


def test_stage_order_comes_from_the_dvc_graph(toy):
    stages = pipeline_stages(toy)
    names = [s.name for s in stages]
    assert sorted(names) == ["evaluate", "flaky", "prepare", "train"]
    for stage in stages:
        for upstream in stage.upstream:
            assert names.index(upstream) < names.index(stage.name), (upstream, stage.name, names)
    assert {s.name: s.upstream for s in stages}["evaluate"] == ("train",)
    assert names[0] == "prepare"


def test_run_stage_runs_once_then_dvc_skips_it(toy):
    lines: list[str] = []
    first = run_stage(toy, "prepare", on_line=lines.append)
    assert first.ran and (toy / "data.txt").exists() and any("prepare" in line for line in lines)
    assert not run_stage(toy, "prepare", on_line=lambda _: None).ran
    (toy / "toy.yaml").write_text(yaml.safe_dump({"score": 0.7, "fail_times": 5}))
    with pytest.raises(StageFailed, match="flaky"):
        run_stage(toy, "flaky", on_line=lambda _: None)


def test_dask_address_prefers_the_environment(monkeypatch):
    from shopsight.config import DaskParams

    monkeypatch.delenv("SHOPSIGHT_DASK_ADDRESS", raising=False)
    assert dask_address(DaskParams()) is None
    assert dask_address(DaskParams(address="tcp://10.0.0.1:8786")) == "tcp://10.0.0.1:8786"
    monkeypatch.setenv("SHOPSIGHT_DASK_ADDRESS", "tcp://127.0.0.1:9999")
    assert dask_address(DaskParams(address="tcp://10.0.0.1:8786")) == "tcp://127.0.0.1:9999"


@pytest.mark.integration
def test_flow_retries_a_transient_failure_gates_and_leaves_the_champion_on_rejection(tmp_path, toy_task):
    from flows.training import training_flow

    project = make_toy_project(tmp_path / "p", score=0.70, fail_times=1, retries=1)
    first = training_flow(project_dir=str(project), reason="test")
    assert int((project / "attempts.txt").read_text()) == 2, "the flaky stage failed once and was retried"
    assert {s["stage"] for s in first["stages"] if s["ran"]} == {"prepare", "flaky", "train", "evaluate"}
    champion = first["registrations"]["toy"]["tag"]
    assert first["registrations"]["toy"]["promoted"] and registry.champion_tag(toy_task) == champion

    # A no-op rerun: DVC skips every stage and the same model is not registered again.
    again = training_flow(project_dir=str(project))
    assert not any(s["ran"] for s in again["stages"])
    assert not again["registrations"]["toy"]["registered"] and len(registry.list_models(toy_task)) == 1

    # A worse challenger: registered, rejected by the gate, champion untouched.
    set_score(project, 0.65)
    worse = training_flow(project_dir=str(project))
    assert {s["stage"] for s in worse["stages"] if s["ran"]} == {"train", "evaluate"}
    reg = worse["registrations"]["toy"]
    assert reg["status"] == "challenger" and not reg["promoted"] and "| roc_auc | main |" in reg["comparison"]
    assert registry.champion_tag(toy_task) == champion

    # A better one passes the gate.
    set_score(project, 0.80)
    better = training_flow(project_dir=str(project))
    assert better["registrations"]["toy"]["promoted"] and registry.champion_tag(toy_task) != champion


@pytest.mark.integration
def test_a_failing_stage_stops_the_run_before_registration(tmp_path, toy_task):
    from flows.training import training_flow

    metrics = {split: {"toy": {"roc_auc": 0.70, "log_loss": 0.5}} for split in ("valid", "test")}
    champion = registry.register_model(toy_task, _fake_model(tmp_path), metrics, {}, main_metric="roc_auc", model_key="toy").tag
    # A better model (it would win the gate) and a stage that fails every time.
    project = make_toy_project(tmp_path / "p", score=0.90, fail_times=99, retries=1)
    state = training_flow(project_dir=str(project), return_state=True)
    assert state.is_failed()
    assert int((project / "attempts.txt").read_text()) == 2, "one try and one retry"
    assert registry.champion_tag(toy_task) == champion
    assert [r["tag"] for r in registry.list_models(toy_task)] == [champion]


SLOW_STAGE = """
  slow:
    cmd: python toy.py slow
    deps: [data.txt]
    outs: [slow.txt]
"""


@pytest.mark.integration
def test_a_run_killed_half_way_reruns_to_completion_without_cleanup(tmp_path):
    import signal
    import subprocess
    import time

    project = make_toy_project(tmp_path / "p")
    (project / "dvc.yaml").write_text(TOY_DVC + SLOW_STAGE)
    code = f"from flows.training import training_flow; training_flow(project_dir={str(project)!r}, tasks=[])"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (project / "slow-started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the flow did not reach the slow stage"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run dies mid-stage: flow, DVC and the stage command
        proc.wait()
        gone_by = time.monotonic() + 60
        while time.monotonic() < gone_by:  # orphans of the group are reaped by init, not by us: wait for that
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    assert (project / "slow.txt").read_text() == "half"

    from flows.training import training_flow

    result = training_flow(project_dir=str(project), tasks=[])  # no manual cleanup in between
    assert "slow" in {s["stage"] for s in result["stages"] if s["ran"]}
    assert (project / "slow.txt").read_text() == "done"
    status = run([sys.executable, "-m", "dvc", "status"], project).stdout
    assert "up to date" in status, status


def _fake_model(tmp_path: Path) -> Path:
    path = tmp_path / "fake-model"
    path.mkdir()
    (path / "model.bin").write_bytes(uuid.uuid4().bytes)
    return path


@pytest.mark.integration
def test_trigger_retrain_without_a_server_runs_the_flow_here(toy, monkeypatch):
    from flows.triggers import trigger_retrain

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    outcome = trigger_retrain("drift: 40% of features drifted", project_dir=str(toy), dry_run=True)
    assert outcome.mode == "direct" and outcome.state == "Completed"
    assert outcome.result["reason"] == "drift: 40% of features drifted"
    # dry_run only reports the plan (in DVC graph order) and runs nothing
    assert outcome.result["stages"][0] == "prepare" and not (toy / "data.txt").exists()


def test_distribution_strategy_rejects_unknown_names():
    from shopsight.orchestration import distribution_strategy

    with pytest.raises(ValueError, match="training.distribute"):
        distribution_strategy("ring")


_DISTRIBUTE_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score
from shopsight.config import MLPParams
from shopsight.train import fit_binary_mlp

rng = np.random.default_rng(0)
x = rng.normal(size=(1200, 6)).astype("float32")
y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.3, size=1200) > 0).astype("float32")
cfg = MLPParams(hidden_units=[8], epochs=6, patience=3, batch_size=64, learning_rate=0.01, seed=1)
fits = {d: fit_binary_mlp(x[:800], y[:800], x[800:1000], y[800:1000], cfg, name="m", distribute=d) for d in ("none", "mirrored")}
model, hist = fits["mirrored"]
print(json.dumps({
    "mirrored": isinstance(model.distribute_strategy, tf.distribute.MirroredStrategy),
    "val_auc": [list(map(float, hist["val_auc"])), list(map(float, fits["none"][1]["val_auc"]))],
    "test_auc": float(roc_auc_score(y[1000:], model(x[1000:], training=False).numpy().ravel())),
}))
"""


def test_training_distribute_builds_the_model_in_the_strategy():
    """`training.distribute: mirrored` on this CPU host: one replica, so the same seed gives the same training as the
    default strategy; the model lives in the strategy and learns (held-out rows). Run in a fresh process, as a stage
    runs: a test worker that has run Prefect flows keeps their threads, beside which TensorFlow's strategy once
    crashed the whole worker (segmentation fault in Keras' epoch iterator, CI 2026-12-01)."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _DISTRIBUTE_SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["mirrored"]
    assert np.allclose(result["val_auc"][0], result["val_auc"][1], atol=1e-6)
    assert result["test_auc"] > 0.9