"""shopsight: predict what shoppers do next (see README.md and ../shared/DESIGN.md)."""

from __future__ import annotations

import os


def _numpy_without_hugepage_advice() -> bool:
    """Stop numpy advising huge pages for its large arrays, unless NUMPY_MADVISE_HUGEPAGE says otherwise.

    With transparent huge pages in `madvise` mode and `defrag=madvise` (the Ubuntu default, and these machines),
    page faults in advised arrays can stall on memory compaction. Measured with bench/bench_numpy_pages.py: one
    feature-stage run on 10M events (fresh process, build + write) took 4.1 s advised and 3.7 s not advised
    (1.08x-1.10x over two runs of 3-5 rounds); the first fill of a 141 MB matrix ranged from 0.39 s advised vs
    0.06 s not (fragmented memory) to 0.02 s vs 0.06 s (huge pages free), so the gain depends on the machine's
    memory state. Set NUMPY_MADVISE_HUGEPAGE=1 to keep numpy's default.
    Returns whether the advice is now off.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:  # numpy read it at import; an explicit choice wins
        return os.environ["NUMPY_MADVISE_HUGEPAGE"] == "0"
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # a numpy without the switch: nothing to do
        return False
    _set_madvise_hugepage(False)
    return True


HUGEPAGE_ADVICE_OFF = _numpy_without_hugepage_advice()
