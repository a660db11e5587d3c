"""Start-up cost of one pipeline process: importing the stack with the installed bytecode (what `make install` writes
with `uv pip install --compile-bytecode`) against without it (every .py compiled again, which is what happens on a
machine with PYTHONDONTWRITEBYTECODE set when the install left no .pyc: uv's default).

    python bench/bench_imports.py [--modules keras,tensorflow] [--repeat 3]

Each import runs in a fresh process (a process imports a module once); "without" points PYTHONPYCACHEPREFIX at an
empty folder and forbids writing there, so Python finds no bytecode and compiles every module it imports. Rounds
alternate so that a load change on this shared machine hits both sides. The figure is the median ratio
without / with bytecode: every DVC stage, flow and `bentoml serve` pays the import once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def import_seconds(modules: list[str], bytecode: bool) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory(prefix="no-bytecode-") as empty:
        if not bytecode:
            env.update(PYTHONPYCACHEPREFIX=empty, PYTHONDONTWRITEBYTECODE="1")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import " + ", ".join(modules)], env=env, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default="keras,tensorflow", help="comma-separated modules to import")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    modules = args.modules.split(",")
    import_seconds(modules, True)  # warm the file cache: both sides then read the same files from memory
    with_bc, without_bc = [], []
    for _ in range(args.repeat):
        with_bc.append(import_seconds(modules, True))
        without_bc.append(import_seconds(modules, False))
    ratios = [w / b for w, b in zip(without_bc, with_bc)]
    print(f"import {', '.join(modules)} in a fresh process ({args.repeat} alternating rounds, load average "
          f"{os.getloadavg()[0]:.1f}): {statistics.median(with_bc):.1f} s with bytecode, "
          f"{statistics.median(without_bc):.1f} s compiling the sources")
    print(f"RATIO without / with bytecode: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
