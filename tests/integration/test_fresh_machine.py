"""The README's flow commands on a fresh, busy machine: an empty PREFECT_HOME and BENTOML_HOME, Prefect's own
defaults (no startup timeout raised by the test environment), and every CPU kept busy by other processes.

Before shopsight/prefect_setup.py, `python -m flows.training` failed here every time: the temporary Prefect
server had to migrate a new database inside Prefect's 20 s startup timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# Settings the test session itself sets (tests/conftest.py): a user's shell has none of them.
SESSION_ONLY = ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_API_URL",
                "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "PREFECT_HOME", "BENTOML_HOME")
NOISE = ("database is locked", "--- Logging error ---", "Traceback (most recent call last)")


def _fresh_user_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}
    env.update(PREFECT_HOME=str(root / "prefect-home"), BENTOML_HOME=str(root / "bentoml-home"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def _busy_cpus() -> list[subprocess.Popen]:
    """One spinning process per core, as a loaded machine has."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        text = [part.decode(errors="replace") if isinstance(part, bytes) else (part or "") for part in (exc.stdout, exc.stderr)]
        pytest.fail(f"{' '.join(cmd)} still running after {timeout} s:\n{text[0][-3000:]}\n{text[1][-3000:]}")


@pytest.mark.timeout(2400)  # two flows on a machine whose cores are all kept busy
def test_training_then_monitoring_flow_from_empty_homes_on_a_busy_machine(tiny_project_pristine, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tiny_project_pristine, project, ignore=shutil.ignore_patterns("bentoml-serve-*.log"))
    env = _fresh_user_env(tmp_path)
    assert not Path(env["PREFECT_HOME"]).exists()
    burners = _busy_cpus()
    try:
        training = _run([sys.executable, "-m", "flows.training"], project, env, timeout=1200)
        monitoring = _run([sys.executable, "-m", "flows.monitoring", "--no-act"], project, env, timeout=900)
    finally:
        for proc in burners:  # stopped by their own PIDs
            proc.kill()
            proc.wait()
    out = training.stdout + training.stderr
    assert training.returncode == 0, out[-6000:]
    assert "=== shopsight demo: results ===" in training.stdout
    assert "Preparing Prefect's local database" in training.stderr  # the migration ran before the server started
    for needle in NOISE:
        assert needle not in out, f"{needle!r} in the training flow's output:\n{out[-6000:]}"

    out = monitoring.stdout + monitoring.stderr
    assert monitoring.returncode == 0, out[-6000:]
    assert "Preparing Prefect's local database" not in monitoring.stderr  # prepared once per home
    for needle in NOISE:
        assert needle not in out, f"{needle!r} in the monitoring flow's output:\n{out[-6000:]}"
    # The embedded shop's events end before this calendar week: the default is the data's last complete week,
    # so the report judges real rows instead of "0 current rows, not judged".
    assert "(week chosen by default: --week-end " in monitoring.stdout
    report_path = next(line.split("report ", 1)[1].strip() for line in monitoring.stdout.splitlines() if "; report " in line)
    report = json.loads((project / report_path).read_text() if not Path(report_path).is_absolute() else Path(report_path).read_text())
    assert report["sources"]["user_features"]["current_rows"] >= 200, report["sources"]["user_features"]
