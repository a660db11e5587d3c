"""Start real servers on 127.0.0.1 for tests, and stop exactly the process group we started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def bentoml_server(target: str, cwd: Path, env: dict | None = None, timeout: float = 120.0, log_dir: Path | None = None,
                   wait_for: str = "/readyz"):
    """`bentoml serve target` on a free 127.0.0.1 port; yields the base URL once `wait_for` answers 200."""
    port = free_port()
    log = open(Path(log_dir or cwd) / f"bentoml-serve-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so we stop it and its workers by its PID
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{Path(log.name).read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}{wait_for}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bentoml serve not ready in {timeout}s:\n{Path(log.name).read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def service_env(project: Path, logs: Path, api_key: str = "", **serving) -> dict[str, str]:
    """Environment for `bentoml serve` of the project's service with its params plus `serving` overrides (written
    under `logs`), its own prediction log dir and API key ("" = none)."""
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["serving"].update(serving)
    path = logs / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return {"SHOPSIGHT_API_KEY": api_key, "SHOPSIGHT_PREDICTION_LOG_DIR": str(logs / "predictions"), "SHOPSIGHT_PARAMS": str(path)}
