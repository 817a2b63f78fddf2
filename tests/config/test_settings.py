"""The config is made of the stages' settings: ``--set`` reaches every config field, each stage
has one settings class, and per-command fields stay out of the config file."""
import dataclasses
import json

import pytest

from pipeline.config.fields import config_fields
from pipeline.config.load import load_config
from pipeline.config.schema import Config, ConfigError


def test_set_reaches_every_config_field():
    defaults = Config()
    for section in dataclasses.fields(Config):
        for field in config_fields(getattr(defaults, section.name)):
            value = getattr(getattr(defaults, section.name), field.name)
            key = f"{section.name}.{field.name}"
            config = load_config(overrides=[f"{key}={json.dumps(value)}"])
            assert config == defaults, key
    changed = load_config(overrides=["verify.gates.quantized.metric_drop=0.02",
                                     "verify.gates.quantized.top1_agreement=0.97",
                                     "quantize.modes=int8,float16", "bench.threads=1,2"])
    assert changed.verify.gates == {"quantized": {"metric_drop": 0.02, "top1_agreement": 0.97}}
    assert changed.quantize.modes == ["int8", "float16"] and changed.bench.threads == [1, 2]


def test_each_stage_has_one_settings_class_and_the_config_is_made_of_them():
    """The config's section of a stage is that stage's settings class: a command builds the same
    class from its options, and ``pipeline run`` hands the stage its section, completed per
    variant. A per-command field (which model, which artifacts) is not a config field."""
    from pipeline.config.gates import VerifyOptions
    from pipeline.config.stages import BenchOptions, ConvertOptions, ExportOptions, PruneOptions, QuantizeOptions
    from pipeline.running.orchestrator import stage_options

    config = load_config(overrides=["quantize.calibration_samples=50", "verify.gates.quantized.metric_drop=0.02",
                                    "prune.sparsity=[0, 0.5, 0.8]"])
    for stage, settings in (("prune", PruneOptions), ("quantize", QuantizeOptions), ("convert", ConvertOptions),
                            ("verify", VerifyOptions), ("bench", BenchOptions), ("export", ExportOptions)):
        assert type(getattr(config, stage)) is settings, stage
        assert type(stage_options(config, stage)) is settings, stage
    quantize = stage_options(config, "quantize", pruned=True)
    assert quantize.pruned and quantize.calibration_samples == 50
    assert quantize.gates == {"quantized": {"metric_drop": 0.02}}
    convert = stage_options(config, "convert", pruned=True)
    assert convert.calibration_samples == 50 and convert.gates == quantize.gates  # quantize's calibration
    pruned = stage_options(config, "prune", sparsity=[0.8])
    assert pruned.target_sparsity == 0.8 and config.prune.sparsity == [0.0, 0.5, 0.8]  # the config untouched
    assert PruneOptions(sparsity=0.3).sparsity == [0.3]  # a number is a sweep of one
    # per-command fields: neither in the config file nor in config.json
    assert "pruned" not in config.to_dict()["quantize"] and "artifacts" not in config.to_dict()["verify"]
    with pytest.raises(ConfigError, match=r"quantize\.pruned: unknown field"):
        load_config(overrides=["quantize.pruned=true"])


@pytest.mark.parametrize("override, message", [
    ("quantize.engine=tflite", "quantize.engine: unknown value 'tflite'; known: litert-quantizer, converter"),
    ("train.task=segmentation", "train.task: unknown value 'segmentation'; known: classifier, reconstruction"),
])
def test_an_unknown_engine_or_task_in_a_config_is_one_error(override, message):
    from pipeline import load_config

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(overrides=[override])
