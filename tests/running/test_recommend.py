"""The recommendation by target: what the target runs and the user's budgets decide first, the
Pareto front only among what is left, and "none" names each artifact's reason. Rows are built
here (the recommendation reads report rows, nothing else), so nothing depends on timing."""
import pytest

from pipeline.core.errors import UsageError
from pipeline.running.recommend import export_pick, recommend


def _row(artifact, mode, p50, size, *, arena=None, fmt="tflite", directory=".", passed=True, drop=0.0):
    return {"artifact": artifact, "dir": directory, "format": fmt, "mode": mode, "p50_ms": p50,
            "p50_spread_ms": 0.0001, "size_kb": size, "score": 0.97 - drop, "passed": passed,
            "failed_gates": [] if passed else ["top1_agreement"], "metric": "accuracy", "delta": -drop,
            "arena_kb": arena, "flash_kb": None if arena is None else size - 1}


# What a user on an AMD EPYC got: the pruned dynamic-range model is fastest on x86 and dominates
# both int8 models there, though neither it nor any float model runs on a microcontroller.
ROWS = [
    _row("model_float32.tflite", "float32", 0.028, 480.5),
    _row("model_int8.tflite", "int8", 0.013, 128.6, arena=30.1),
    _row("model_float32.onnx", "float32", 0.033, 480.3, fmt="onnx"),
    _row("model_pruned_dynamic.tflite", "dynamic", 0.007, 37.0, directory="variants/pruned-50"),
    _row("model_pruned_int8.tflite", "int8", 0.008, 37.5, arena=16.2, directory="variants/pruned-50"),
]


def test_a_ram_budget_picks_the_integer_model_that_fits_not_none():
    chosen = recommend(ROWS, {"max_accuracy_drop": 0.01, "max_ram_kb": 64}).chosen
    assert chosen["artifact"] == "model_pruned_int8.tflite"  # the dynamic model has no arena at all
    tight = recommend(ROWS, {"max_ram_kb": 20}).chosen
    assert tight["artifact"] == "model_pruned_int8.tflite"


def test_each_target_recommends_only_what_it_runs():
    picks = {t: recommend(ROWS, {"target": t}).chosen["artifact"] for t in ("any", "mcu", "npu", "phone", "pi")}
    assert picks["any"] == picks["phone"] == picks["pi"] == "model_pruned_dynamic.tflite"
    assert picks["mcu"] == picks["npu"] == "model_pruned_int8.tflite"
    mcu = recommend(ROWS, {"target": "mcu"})
    assert "TFLite Micro" in mcu.why and "16.2 KiB" in mcu.why
    assert "integer TFLite" in mcu.reasons["variants/pruned-50/model_pruned_dynamic.tflite"]


def test_an_artifact_tflm_did_not_measure_or_failed_is_no_microcontroller_pick():
    rows = [_row("model_int8.tflite", "int8", 0.01, 100, arena=None),
            dict(_row("model_int16x8.tflite", "int16x8", 0.02, 100, arena=40), failed_gates=["tflm_top1_agreement"],
                 passed=False)]
    outcome = recommend(rows, {"target": "mcu"})
    assert outcome.chosen is None
    assert outcome.reasons == {"./model_int8.tflite": "not measured on TFLite Micro",
                               "./model_int16x8.tflite": "failed tflm_top1_agreement"}


def test_none_meets_the_constraints_names_each_reason():
    outcome = recommend(ROWS, {"target": "mcu", "max_ram_kb": 8, "max_accuracy_drop": 0.01})
    assert outcome.chosen is None
    line = outcome.none_line()
    assert "./model_int8.tflite: TFLM arena 30.1 KiB > 8 KiB" in line
    assert "variants/pruned-50/model_pruned_int8.tflite: TFLM arena 16.2 KiB > 8 KiB" in line
    assert ("./model_float32.tflite, ./model_float32.onnx, variants/pruned-50/model_pruned_dynamic.tflite: "
            "target mcu runs integer TFLite") in line
    drop = recommend([_row("model_int8.tflite", "int8", 0.01, 100, arena=10, drop=0.05)], {"max_accuracy_drop": 0.01})
    assert drop.reasons["./model_int8.tflite"] == "accuracy drop 5.00 pt > 1.00 pt"


def test_the_board_gets_the_best_integer_model_when_the_recommendation_is_not_one():
    recommendation = recommend(ROWS, {})
    assert recommendation.chosen["mode"] == "dynamic"
    board = export_pick(ROWS, {}, recommendation)
    assert board.chosen["artifact"] == "model_pruned_int8.tflite"
    assert export_pick(ROWS, {"target": "mcu"}, recommend(ROWS, {"target": "mcu"})).chosen is not None


def test_an_unknown_target_suggests_the_closest():
    with pytest.raises(UsageError, match="unknown target 'mcx'. Did you mean 'mcu'"):
        recommend(ROWS, {"target": "mcx"})
