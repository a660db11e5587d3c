"""`import shopsight` turns numpy's huge-page advice off unless NUMPY_MADVISE_HUGEPAGE chooses (bench/bench_numpy_pages.py)."""

import os
import subprocess
import sys

import pytest

PROBE = "import shopsight; from numpy._core.multiarray import _get_madvise_hugepage as g; print(shopsight.HUGEPAGE_ADVICE_OFF, g())"


@pytest.mark.parametrize(("env_value", "expected"), [(None, "True False"), ("1", "False True"), ("0", "True False")])
def test_hugepage_advice_follows_the_environment(env_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if env_value is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == expected.split()
