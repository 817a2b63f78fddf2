"""LiteRT Quantizer (the renamed ai-edge-quantizer; either package name): a float32 ``.tflite``
quantized with a recipe, calibrated over each tensor's global range across the samples."""
from __future__ import annotations

import contextlib
import io

import numpy as np

from pipeline.core.errors import ConversionError

# quantize's modes -> LiteRT Quantizer's recipes. dynamic: the "legacy" one, which leaves
# weights under 1,024 elements in float as the converter does (dynamic_wi8_afp32 quantizes them
# too: on the seed CNN its first conv, 288 weights on one input channel, made the model 2.3x
# slower, 0.040 against 0.018 ms, for 1.5% of the size). float16: float casting of the weights
# (a weight-only recipe), which the package names no function for.
RECIPES = {"int8": "static_wi8_ai8", "int16x8": "static_wi8_ai16", "dynamic": "dynamic_legacy_wi8_afp32",
           "float16": "float_casting_wf16", "weight_only_int8": "weight_only_wi8_afp32",
           "int4": "dynamic_wi4_afp32"}
# Modes only LiteRT Quantizer makes (whatever --engine says)
LITERT_ONLY = ("weight_only_int8", "int4")


def modules():
    """``(quantizer, recipe, calibrator, qsv_utils)`` of whichever package is installed."""
    try:
        from litert_quantizer import calibrator, quantizer, recipe  # 0.11 and later
        from litert_quantizer.utils import qsv_utils
    except ImportError:
        from ai_edge_quantizer import calibrator, quantizer, recipe
        from ai_edge_quantizer.utils import qsv_utils
    return quantizer, recipe, calibrator, qsv_utils


def recipe_for(mode: str):
    """LiteRT Quantizer's recipe of ``mode`` (``RECIPES``)."""
    _, recipe, _, _ = modules()
    if mode != "float16":
        return getattr(recipe, RECIPES[mode])()
    try:
        from litert_quantizer import qtyping, recipe_manager
        from litert_quantizer.algorithm_manager import AlgorithmName
    except ImportError:
        from ai_edge_quantizer import qtyping, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
    manager = recipe_manager.RecipeManager()
    manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                   num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()


def calibrate(qt, float_model: bytes, feeds: dict) -> dict:
    """Each tensor's range over every calibration sample, as TensorFlow's converter takes it.
    ``Quantizer.calibrate`` keeps a moving average of each call's min and max: fed one sample a
    call (the model's batch is 1), it narrows every range to a typical sample's and clips the rest
    (measured on the MLPerf ResNet-8, CIFAR-10, 1,017 test images: int8 85.64% against the
    converter's 87.71%; with the global min and max, 87.71%, 8 images lost and 8 gained)."""
    _, _, calibrator, qsv_utils = modules()
    manager = getattr(qt, "_recipe_manager", None)
    if manager is None or not hasattr(qsv_utils, "min_max_update"):  # another version: its own way
        return qt.calibrate(feeds)
    with contextlib.redirect_stderr(io.StringIO()):  # a progress bar
        calibration = calibrator.Calibrator(float_model, qsv_update_func=qsv_utils.min_max_update)
        calibration.calibrate(feeds, manager)
    return calibration.get_model_qsvs()


def quantize_with_recipe(float_model: bytes, mode: str, calibration: np.ndarray | None, *,
                         global_range: bool = True, method: str = "minmax") -> bytes:
    """``float_model`` (a float32 .tflite with a ``serving_default`` signature) quantized by
    LiteRT Quantizer in ``mode``; ``calibration``: model-ready samples for the static modes,
    over each tensor's global range (``global_range`` False: LiteRT Quantizer's own moving
    average, which ``benchmarks/quantizer_engines.py`` compares), narrowed by ``method``
    (``pipeline.formats.calibration``: minmax, percentile or mse)."""
    return quantize_methods(float_model, mode, calibration, (method,), global_range=global_range)[method]


def quantize_methods(float_model: bytes, mode: str, calibration: np.ndarray | None, methods, *,
                     global_range: bool = True) -> dict[str, bytes]:
    """``quantize_with_recipe`` once per calibration method, the samples run through the model
    once for all of them (``quantize --calibration auto`` builds each)."""
    from edge_runtime.quiet import quiet_native
    from pipeline.formats.calibration import narrowed
    from pipeline.formats.tflite import SIGNATURE, SIGNATURE_INPUT

    quantizer, _, _, _ = modules()
    try:
        with quiet_native(), contextlib.redirect_stdout(io.StringIO()):
            qt = quantizer.Quantizer(bytearray(float_model))
            qt.load_quantization_recipe(recipe_for(mode))
            if not qt.need_calibration:
                content = bytes(qt.quantize(None).quantized_model)
                return {method: content for method in methods}
            if calibration is None or not len(calibration):
                raise ConversionError(f"{mode} quantization needs calibration samples: pass "
                                      f"--calibration-samples N (N > 0) with a data set")
            feeds = {SIGNATURE: [{SIGNATURE_INPUT: sample[None].astype(np.float32)} for sample in calibration]}
            statistics = calibrate(qt, float_model, feeds) if global_range else qt.calibrate(feeds)
            by_method = narrowed(float_model, calibration, statistics, methods, 16 if mode == "int16x8" else 8)
            return {method: bytes(qt.quantize(by_method[method]).quantized_model) for method in methods}
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many kinds
        from edge_runtime.errors import first_line

        raise ConversionError(f"LiteRT Quantizer could not quantize to {mode}: {first_line(exc)}") from None
