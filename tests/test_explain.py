import numpy as np
import pytest

from shopsight.explain import format_reasons, global_importance, integrated_gradients, top_contributions


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(4,), name="features")
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, out)


def test_attributions_are_complete_and_zero_for_unchanged_features(tiny_model):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4)).astype("float32")
    x[:, 2] = 0.5
    baseline = np.array([0.0, 0.0, 0.5, 0.0], dtype="float32")
    attr = integrated_gradients(tiny_model, x, baseline, steps=64)
    f = tiny_model(x).numpy().ravel()
    f0 = tiny_model(baseline[None, :]).numpy().ravel()
    assert np.allclose(attr.sum(axis=1), f - f0, atol=2e-3)  # completeness
    assert np.allclose(attr[:, 2], 0.0)  # a feature at its baseline value contributes nothing


def test_top_contributions_order_by_magnitude_and_read_well():
    attr = np.array([[0.1, -0.5, 0.2], [0.0, 0.01, -0.02]])
    top = top_contributions(attr, ["a", "b", "c"], 2)
    assert [c["feature"] for c in top[0]] == ["b", "c"]
    assert [c["feature"] for c in top[1]] == ["c", "b"]
    assert format_reasons(top[0]) == "b (-0.500); c (+0.200)"
    imp = global_importance(attr, ["a", "b", "c"])
    assert imp["feature"].tolist()[0] == "b"
