"""A real `prefect server start` on 127.0.0.1 (isolated PREFECT_HOME), the deployments served from flows/deploy.py,
the on-demand retrain started through flows.triggers.trigger_retrain (run_deployment), and run to completion.

The served training flow runs on the toy DVC project of tests/test_orchestration.py (real DVC stages that take
milliseconds) with `tasks=[]`, so the whole path server -> runner -> flow run -> DVC stages is real but cheap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.integration.servers import free_port
from tests.test_orchestration import make_toy_project

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240  # generous: CI machines with 2 busy cores


def _stop(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def started(cmd: list[str], cwd: Path, env: dict, log_path: Path, stop_signal: int = signal.SIGTERM):
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        _stop(proc, stop_signal)
        log.close()


def _wait_for(check, what: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready in {START_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")
        time.sleep(1)


def test_served_deployments_run_on_demand_and_carry_the_schedules(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import ON_DEMAND_RETRAIN, TRAINING_FLOW_NAME, WEEKLY_RETRAIN
    from flows.triggers import trigger_retrain
    from shopsight.config import load_params

    project = make_toy_project(tmp_path / "toy")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    server_cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with started(server_cmd, tmp_path, env, tmp_path / "server.log") as server:
        _wait_for(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, "prefect server", server, tmp_path / "server.log")
        serve_env = {**env, "PREFECT_API_URL": url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        serve_cmd = [sys.executable, "-m", "flows.deploy", "--project-dir", str(project)]
        # SIGINT: the runner's clean shutdown (it pauses the schedules); it must stop before its server does.
        with started(serve_cmd, REPO_ROOT, serve_env, tmp_path / "serve.log", signal.SIGINT) as serving:
            with temporary_settings({PREFECT_API_URL: url}):

                def deployment(name: str):
                    with get_client(sync_client=True) as client:
                        return client.read_deployment_by_name(f"{TRAINING_FLOW_NAME}/{name}")

                _wait_for(lambda: deployment(ON_DEMAND_RETRAIN), "served deployments", serving, tmp_path / "serve.log")
                weekly = deployment(WEEKLY_RETRAIN)
                crons = [s.schedule.cron for s in weekly.schedules]
                assert crons == [load_params(project / "params.yaml").orchestration.retrain_cron]
                assert weekly.parameters["project_dir"] == str(project.resolve())
                assert not deployment(ON_DEMAND_RETRAIN).schedules

                outcome = trigger_retrain("drift: test trigger", wait=True, timeout_s=START_TIMEOUT_S, tasks=[])
                assert outcome.mode == "deployment"
                assert outcome.state == "Completed", (tmp_path / "serve.log").read_text()[-4000:]
                with get_client(sync_client=True) as client:
                    run = client.read_flow_run(outcome.flow_run_id)
                assert run.parameters["reason"] == "drift: test trigger"
                assert run.deployment_id == deployment(ON_DEMAND_RETRAIN).id
            assert (project / "metrics.json").exists(), "the served run executed the project's DVC stages"
