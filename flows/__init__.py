"""Prefect flows. Importing this package sets shopsight's Prefect defaults before Prefect itself is imported
(shopsight/prefect_setup.py: a startup timeout that fits a busy machine, telemetry off)."""

from shopsight.prefect_setup import apply_prefect_defaults

apply_prefect_defaults()
