"""Every task on the real public files in ../shared/realdata, through the normal pipeline, under each field's
standard protocol, every model next to the strongest simple references (and the published numbers where there
are some), the champion marked: the quality bench.

- next item (bench/realdata_recommender.py): Amazon Sports_and_Outdoors and Toys_and_Games, leave-one-out, full
  catalogue, earlier items excluded; the Taobao head;
- propensity and churn (bench/realdata_tabular.py): Online Retail II calibration/holdout, the Taobao head, CDNOW
  weeks 1-39 / 40-78 (where present), and a CDNOW-sized purchase log drawn from BG/NBD (written by the bench);
- demand (bench/realdata_demand.py): Online Retail II daily item and category units.

Sets that are absent are skipped with a message. Slow (tens of minutes on 2 cores): run it by hand, nice'd:

    nice -n 10 .venv/bin/python bench/bench_realdata.py [--task all|recommender|tabular|demand] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["all", "recommender", "tabular", "demand"], default="all")
    parser.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="fewer sets and epochs: a smoke run, not the numbers of record")
    args = parser.parse_args()
    if not args.realdata.exists():
        print(f"skipped: {args.realdata} not found (the real public files; see the README's real-data section)")
        return
    with tempfile.TemporaryDirectory(prefix="shopsight-realdata-") as tmp:
        work = args.workdir or Path(tmp)
        sections = []
        if args.task in ("all", "tabular"):
            import realdata_tabular

            sections.append(("propensity and churn", lambda: realdata_tabular.run(args.realdata, work / "tabular", args.quick)))
        if args.task in ("all", "demand"):
            import realdata_demand

            sections.append(("demand", lambda: realdata_demand.run(args.realdata, work / "demand")))
        if args.task in ("all", "recommender"):
            import realdata_recommender

            sections.append(("next item", lambda: realdata_recommender.run(args.realdata, work / "recommender", args.quick)))
        for title, produce in sections:
            t0 = time.perf_counter()
            body = produce()
            print(f"\n## {title} ({time.perf_counter() - t0:.0f} s)\n\n{body}\n", flush=True)


if __name__ == "__main__":
    main()
