"""Huge-page advice: first touch of large numpy arrays, and one feature-stage run, with numpy's huge-page advice
(NUMPY_MADVISE_HUGEPAGE=1, numpy's default) against without it (=0, what `import shopsight` sets).

    python bench/bench_numpy_pages.py [--events 1000000] [--events-file PATH] [--repeat 3]

Each measurement runs in a fresh process (a process reuses memory it has touched, which hides the cost).
The figure is the median ratio advised / not advised; > 1 means the advice costs time on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILL = """
import time, numpy as np
t = time.perf_counter(); a = np.empty((504_564, 35)); a.fill(1.0); print(time.perf_counter() - t)
"""
STAGE = """
import sys, time
from shopsight.config import FeatureParams
from shopsight.features import build_propensity_dataset
t = time.perf_counter()
build_propensity_dataset(sys.argv[1], FeatureParams()).to_parquet(sys.argv[2], index=False)
print(time.perf_counter() - t)
"""


def timed(code: str, advice: str, *args: str) -> float:
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": advice}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--events-file", type=Path, help="use this events Parquet file instead of simulating")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"transparent huge pages: {Path('/sys/kernel/mm/transparent_hugepage/enabled').read_text().strip()}, "
          f"defrag: {Path('/sys/kernel/mm/transparent_hugepage/defrag').read_text().strip()}")
    with tempfile.TemporaryDirectory(prefix="bench_pages_") as tmp:
        events = args.events_file
        if events is None:
            from bench_features import generate

            generate(args.events, Path(tmp))
            events = Path(tmp) / "sim" / "events.parquet"
        out = str(Path(tmp) / "features.parquet")
        for name, code, extra in [("first fill of a 141 MB float matrix", FILL, ()),
                                  ("feature stage, one run (build + write)", STAGE, (str(events), out))]:
            rounds = [(timed(code, "1", *extra), timed(code, "0", *extra)) for _ in range(args.repeat)]  # interleaved
            on, off = statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)
            ratio = statistics.median(a / b for a, b in rounds)
            print(f"{name}: advised {on:.3f} s, not advised {off:.3f} s, ratio advised/not advised {ratio:.2f}x (median of {args.repeat})")


if __name__ == "__main__":
    main()
