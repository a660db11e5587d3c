"""Prefect flows. Importing this package sets shopsight's Prefect defaults before Prefect itself is imported
(shopsight/prefect_setup.py: a startup timeout that fits a busy machine, telemetry off), and keeps TensorFlow's
C++ start-up banners out of the flow logs, as `make` does."""

import os

from shopsight.prefect_setup import apply_prefect_defaults

apply_prefect_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
