"""Orchestration overhead: the Prefect training flow (one task per DVC stage) against plain `dvc repro`.

    python bench/bench_orchestration.py [--quick]

Two fresh copies of the project (own git repo, own DVC cache) run the same pipeline: one with `dvc repro`,
one with flows.training (registrations and bento off, so both do exactly the DVC stages). Then both run
again with nothing changed (the no-op rerun). Prints each time and the ratios flow / dvc, measured side by
side. The temporary Prefect API is started before timing (a served deployment has its server already);
its start-up time is printed separately. --quick uses tiny data instead of the demo's params.yaml.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

QUICK_PARAMS = {
    "data": {"synthetic": {"n_users": 600, "n_items": 120, "n_categories": 6, "days": 84, "seed": 11}},
    "features": {"windows_days": [7, 28], "horizon_days": 7, "cutoff_step_days": 7, "n_train_cutoffs": 2},
    "propensity": {"mlp": {"epochs": 3, "batch_size": 128, "hidden_units": [16]}},
}


def _merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base


def copy_project(dest: Path, params_update: dict | None) -> Path:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True)
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("tests/", "bench/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if params_update:
        path = dest / "params.yaml"
        path.write_text(yaml.safe_dump(_merge(yaml.safe_load(path.read_text()), params_update), sort_keys=False))
    git = ["git", "-c", "user.email=b@example.com", "-c", "user.name=b"]
    for cmd in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data (seconds per stage) instead of the demo params")
    args = parser.parse_args()

    from flows.training import training_flow
    from shopsight.orchestration import prefect_api

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        update = QUICK_PARAMS if args.quick else None
        plain = copy_project(Path(tmp) / "dvc", update)
        flowed = copy_project(Path(tmp) / "flow", update)
        os.environ["BENTOML_HOME"] = str(Path(tmp) / "bentoml")

        def dvc_repro() -> None:
            subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=plain, env=env, check=True, capture_output=True)

        def flow_run() -> None:
            training_flow(project_dir=str(flowed), tasks=[], build_bento=False, reason="bench")

        api = prefect_api()
        server_s = timed(api.__enter__)  # the temporary API stays up for the timed flow runs
        cold_dvc, cold_flow = timed(dvc_repro), timed(flow_run)
        noop_dvc, noop_flow = timed(dvc_repro), timed(flow_run)
        api.__exit__(None, None, None)

    print(f"data: {'tiny (--quick)' if args.quick else 'demo params.yaml'}; temporary Prefect API start {server_s:.1f}s (not counted)")
    print(f"full run:  dvc repro {cold_dvc:7.1f}s   prefect flow {cold_flow:7.1f}s   RATIO flow/dvc {cold_flow / cold_dvc:.2f}")
    print(f"no-op run: dvc repro {noop_dvc:7.1f}s   prefect flow {noop_flow:7.1f}s   RATIO flow/dvc {noop_flow / noop_dvc:.2f}")


if __name__ == "__main__":
    main()
