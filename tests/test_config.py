import pytest

from shopsight.config import ConfigError, load_params
from tests.conftest import REPO_ROOT


def test_repository_params_are_valid():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.source == "synthetic"
    assert params.features.lookback_days == max(params.features.windows_days)


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("propensity:\n  mlp:\n    hiden_units: [3]\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert "params.yaml" in str(err.value) and "propensity.mlp.hiden_units" in str(err.value)


def test_bad_value_and_missing_file_path(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("features:\n  horizon_days: -3\n")
    with pytest.raises(ConfigError, match="features.horizon_days"):
        load_params(path)
    path.write_text("data:\n  source: retailrocket\n")
    with pytest.raises(ConfigError, match="data.path"):
        load_params(path)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
