"""Every library internal the project relies on, checked: an upgrade that moves one fails
here, with the name of what moved, instead of somewhere downstream."""
import json
import zipfile

import numpy as np
import pytest


def _small_model():
    import keras

    inputs = keras.Input((8,))
    shared = keras.layers.Dense(4, name="shared")
    outputs = keras.layers.Add()([shared(inputs), shared(inputs)])
    return keras.Model(inputs, keras.layers.Dense(3)(outputs))


def test_keras_seeding_without_tensorflow_sets_what_set_random_seed_sets():
    import keras
    from keras.src.backend.common import global_state  # the internals seed_keras_without_tensorflow uses
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    from pipeline.compat.keras import seed_keras_without_tensorflow

    keras.utils.set_random_seed(5)  # the public call: it must still keep its seed where we put ours
    assert global_state.get_global_attribute(rng_utils.GLOBAL_RANDOM_SEED) == 5
    seed_generator.global_seed_generator()
    assert global_state.get_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR) is not None
    seed_keras_without_tensorflow(7)
    assert global_state.get_global_attribute(rng_utils.GLOBAL_RANDOM_SEED) == 7
    assert global_state.get_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR) is None
    keras.utils.set_random_seed(0)


def test_keras_archive_layout_and_normalization(tmp_path):
    from pipeline.compat.keras import ARCHIVE_FILES
    from pipeline.core.modelio import save_model

    model = _small_model()
    one, two = save_model(model, tmp_path / "a.keras"), save_model(model, tmp_path / "b.keras")
    with zipfile.ZipFile(one) as archive:
        assert sorted(archive.namelist()) == sorted(ARCHIVE_FILES), "the .keras layout changed"
        metadata = json.loads(archive.read("metadata.json"))
        config = archive.read("config.json").decode()
    assert "date_saved" not in metadata and "keras_version" in metadata
    assert '"shared_object_id": 1' in config  # the shared Dense, renumbered from its id()
    assert one.read_bytes() == two.read_bytes()


def test_mixed_precision_config_strips_to_float32():
    import keras

    from pipeline.core.modelio import float32_copy

    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = _small_model()
    finally:
        keras.config.set_dtype_policy("float32")
    assert any(isinstance(layer.get("config", {}).get("dtype"), dict)
               and layer["config"]["dtype"].get("class_name") == "DTypePolicy"
               for layer in mixed.get_config()["layers"]), "Keras serializes policies differently"
    twin = float32_copy(mixed)
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in twin.layers)
    x = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    np.testing.assert_allclose(twin.predict(x, verbose=0), mixed.predict(x, verbose=0), atol=0.05)


def test_converter_still_has_the_per_tensor_dense_switch():
    import tensorflow as tf

    from pipeline.compat.tensorflow import _PER_TENSOR_DENSE, per_tensor_dense_weights

    converter = tf.lite.TFLiteConverter.from_keras_model(_small_model())
    assert hasattr(converter, _PER_TENSOR_DENSE), f"TensorFlow dropped {_PER_TENSOR_DENSE}"
    per_tensor_dense_weights(converter)
    assert getattr(converter, _PER_TENSOR_DENSE) is True


def test_litert_interpreter_still_lists_its_ops(tmp_path):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.litert_compat import op_names

    converter = tf.lite.TFLiteConverter.from_keras_model(_small_model())
    interpreter = Interpreter(model_content=converter.convert())
    assert hasattr(interpreter, "_get_ops_details"), "LiteRT dropped _get_ops_details"
    names = op_names(interpreter)
    assert "FULLY_CONNECTED" in names and "ADD" in names, names


def test_no_private_imports_outside_the_compat_modules():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    private = re.compile(r"^\s*(from|import)\s+(keras\.src|tensorflow\.python|keras_tuner\.src)\b", re.M)
    compat = root / "pipeline" / "compat"
    offenders = [str(p.relative_to(root)) for package in ("pipeline", "edge_runtime", "models")
                 for p in (root / package).rglob("*.py")
                 if compat not in p.parents and not p.name.endswith("_compat.py")
                 and private.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("module", [
    "pipeline.compat.keras", "pipeline.compat.tensorflow", "edge_runtime.litert_compat"])
def test_compat_modules_import_cleanly(module):
    import importlib

    importlib.import_module(module)


def test_kerastuner_internals_the_search_relies_on(tmp_path, monkeypatch):
    """State writes through one module function (made atomic), the chief's exit poll (made
    prompt), the oracle's seed and retry queue."""
    import time

    import keras_tuner
    from keras_tuner.src import utils
    from keras_tuner.src.distribute import oracle_chief
    from keras_tuner.src.engine import oracle as oracle_module
    from keras_tuner.src.engine import stateful

    from pipeline.compat.keras_tuner import (
        atomic_state_writes,
        prompt_chief_exit,
        random_values,
        retry_queue,
        seed_oracle,
        values_hash,
    )

    atomic_state_writes()
    assert stateful.utils is utils and oracle_module.utils is utils  # they look save_json up at call time
    utils.save_json(str(tmp_path / "oracle.json"), {"ongoing_trials": {}})
    assert json.loads((tmp_path / "oracle.json").read_text()) == {"ongoing_trials": {}}
    assert [p.name for p in tmp_path.iterdir()] == ["oracle.json"]  # no temporary left
    prompt_chief_exit()
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)  # what the chief's 20 s wait asks of the clock
    oracle_chief.time.sleep(20)
    assert slept == [1.0]
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=keras_tuner.Objective("score", "max"), max_trials=1)
    seed_oracle(oracle, 0)
    assert oracle.seed == 0 and oracle._seed_state == 0 and retry_queue(oracle) == []
    oracle.hyperparameters.Choice("width", [8, 16])
    drawn = random_values(oracle)
    assert drawn in ({"width": 8}, {"width": 16})
    assert values_hash(oracle, drawn) == values_hash(oracle, dict(drawn)) != values_hash(oracle, {"width": 0})
