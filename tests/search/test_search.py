"""pipeline search: trials that learn and are measured, a winner that is a normal run, a
search that resumes from its folds, and one that a run continues from (benchmarks/e2e: a search
killed and resumed, and a chief with two workers)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("keras_tuner")
PIPELINE = [sys.executable, "-m", "pipeline.launcher"]
SMALL = ["search", "--model", "mlp", "--epochs", "2", "--bench-seconds", "0.1", "--rescore", "2", "--quiet"]


def _pipeline(*args, env=None, **kwargs):
    return subprocess.run([*PIPELINE, *map(str, args)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})}, **kwargs)


MLP_TRIAL = {"hidden": "32", "learning_rate": 0.003, "optimizer": "adam", "batch_size": 64, "sparsity": 0.0,
             "quantization": "int8"}


def _rows(accuracies: dict[str, float], tmp_path: Path) -> list[dict]:
    return [{"trial": trial, "hyperparameters": {**MLP_TRIAL, "hidden": str(16 * (i + 1))},
             "dir": str(tmp_path / trial),
             "status": "COMPLETED", "metrics": {"val_accuracy": value, "val_log_loss": 0.1, "feasible": 1.0}}
            for i, (trial, value) in enumerate(accuracies.items())]


def test_near_tied_trials_are_rescored_and_the_cross_validated_best_wins(tmp_path, digits, monkeypatch):
    """Trials within the validation noise of the best are re-scored, and the re-scoring, not
    the single validation split, picks the winner; a trial clearly worse is not re-scored."""
    import numpy as np

    from pipeline.core.stats import wilson
    from pipeline.search import winner as search  # where _choose looks up what it calls

    n_val = len(digits.split("val")[1])
    pooled = len(digits.split("train")[1]) + n_val
    # 144 validation images: 0.95 vs 0.94 is one or two images (inside the noise), 0.60 is not
    rows = _rows({"00": 0.95, "01": 0.94, "02": 0.60}, tmp_path)
    right = {"00": 0.90, "01": 0.97}  # the validation runner-up is the better model across folds
    seen = []

    def cross_validate(trial, options, data, x, y, folds):
        seen.append(trial["trial"])
        assert len(x) == len(y) == pooled and sorted(np.concatenate(folds).tolist()) == list(range(pooled))
        correct = np.arange(len(y)) < round(right[trial["trial"]] * len(y))
        return {"correct": correct, "log_loss": 0.2}

    monkeypatch.setattr(search, "_cross_validate", cross_validate)
    winner, record = search._choose(rows, search.SearchOptions(model="mlp"), digits)
    assert seen == ["00", "01"] and record["within_noise"] == ["00", "01"]
    assert winner["trial"] == "01" and record["winner"] == "01" and record["folds"] == 3
    cv = {r["trial"]: r for r in record["rescored"]}
    hits = round(0.97 * pooled)
    assert cv["01"]["cv_accuracy"] == hits / pooled and cv["01"]["cv_accuracy_ci95"] == list(wilson(hits, pooled))
    margin = record["margin"]  # paired: the same samples, 0.97 - 0.90 of them
    assert margin["over"] == "00" and abs(margin["difference"] - (hits - round(0.90 * pooled)) / pooled) < 1e-12
    assert margin["ci95"][0] < margin["difference"] < margin["ci95"][1] and margin["ci95"][0] > 0
    # Re-scoring off, or nothing near the best: validation decides, the margin is unpaired.
    winner, record = search._choose(rows, search.SearchOptions(model="mlp", rescore=0), digits)
    assert winner["trial"] == "00" and record["folds"] == 0 and "off" in record["reason"]
    winner, record = search._choose([rows[0], rows[2]], search.SearchOptions(model="mlp"), digits)
    assert winner["trial"] == "00" and "no other" in record["reason"] and record["margin"]["ci95"][0] > 0
    assert seen == ["00", "01"]


def test_an_architecture_fits_or_not_on_all_its_timings_not_on_one_trials(tmp_path):
    """Two trials of one architecture timed 0.0151 and 0.0158 ms against a 0.0154 ms budget
    (measured on digits): pooled with its untrained twin's timings, both get one verdict, the
    median's; a planted measurement file is not read as timings."""
    from pipeline.search import timer as search  # where _pool_timings looks up what it calls

    options = search.SearchOptions(model="mlp", max_latency_ms=0.0154)
    rows = _rows({"00": 0.95, "01": 0.94, "02": 0.93}, tmp_path)
    for row, p50s in zip(rows, ([0.0150, 0.0151, 0.0152], [0.0158, 0.0157, 0.0159], [0.0100])):
        row["hyperparameters"] = dict(MLP_TRIAL)
        row["metrics"].update(p50_ms=sorted(p50s)[len(p50s) // 2], size_kb=10.0, feasible=float(p50s[0] < 0.0154))
        Path(row["dir"]).mkdir()
        (Path(row["dir"]) / "measurement.json").write_text(json.dumps(
            {"hyperparameters": row["hyperparameters"], "p50_ms_measured": p50s}))
    rows[2]["hyperparameters"]["hidden"] = "64"  # another architecture, timed far inside the budget
    (Path(rows[2]["dir"]) / "measurement.json").write_text(json.dumps({"p50_ms_measured": "0.0001"}))

    class Twin:
        def timings(self, values):
            return [0.0155, 0.0156, 0.0153] if values["hidden"] == "32" else []

    pools = search._pool_timings(rows, Twin(), options)
    key = search.architecture("mlp", MLP_TRIAL)
    # 9 timings: 0.0150 0.0151 0.0152 0.0153 [0.0155] 0.0156 0.0157 0.0158 0.0159
    assert pools[key] == {"p50_ms": 0.0155, "timings": 9, "range_ms": [0.0150, 0.0159]}
    assert [r["metrics"]["feasible"] for r in rows] == [0.0, 0.0, 1.0]
    assert rows[0]["metrics"]["p50_ms_pooled"] == rows[1]["metrics"]["p50_ms_pooled"] == 0.0155
    assert rows[0]["metrics"]["p50_ms"] == 0.0151  # the trial's own figure stays
    assert rows[2]["metrics"]["p50_ms_pooled"] == 0.0100  # its own median: the planted list is ignored
    options.max_latency_ms = 0.0156  # inside the pool's median: both fit
    assert [r["metrics"]["feasible"] for r in (search._pool_timings(rows, Twin(), options), rows)[1]] == [1.0] * 3


def test_a_relative_budget_is_the_ratio_of_the_models_own_p50_and_a_resume_keeps_it(tmp_path, digits):
    """--max-latency-ratio: the budget is measured once, from the zoo model's untrained int8
    twin timed where the trials are, and read back on resume; a damaged record is measured
    again, not trusted."""
    from pipeline.search import timer as search  # where _relative_budget looks up what it calls

    class Timer:
        def __init__(self, p50):
            self.p50s, self.calls = iter(p50), 0

        def p50(self, artifacts):
            self.calls += 1
            assert [a.suffix for a in artifacts] == [".tflite"] and artifacts[0].is_file()
            return [next(self.p50s)]

    options = search.SearchOptions(model="mlp", max_latency_ratio=0.5)
    timer = Timer([0.020, 0.010, 0.012, 0.011, 0.030])  # one disturbed timing of five
    budget = search._relative_budget(options, digits, tmp_path, timer)
    assert timer.calls == 5 and budget["reference_p50_ms"] == 0.012 and budget["max_latency_ms"] == 0.006
    again = search._relative_budget(options, digits, tmp_path, Timer([]))  # resumed: nothing timed
    assert again["max_latency_ms"] == 0.006 and again["timings_ms"] == budget["timings_ms"]
    record = tmp_path / search.BUDGET_FILE
    record.write_text(json.dumps({**json.loads(record.read_text()), "timings_ms": [1e-9, "x", 3, 4, 5]}))
    measured = search._relative_budget(options, digits, tmp_path, Timer([0.004] * 5))
    assert measured["max_latency_ms"] == 0.002
    other = search._relative_budget(search.SearchOptions(model="mlp", max_latency_ratio=0.25), digits, tmp_path,
                                    Timer([0.004] * 5))
    assert other["max_latency_ms"] == 0.001  # another ratio: its own record


def test_cross_validation_holds_out_every_sample_once_and_resumes_from_its_folds(tmp_path, digits, monkeypatch):
    """A real re-scoring of one MLP trial: every train+validation sample is scored once by a
    model that did not train on it, the folds are kept in the trial's folder, a second call
    trains nothing, and a tampered fold is trained again."""
    import numpy as np

    from pipeline.search import winner as search  # where _choose looks up what it calls

    options = search.SearchOptions(model="mlp", epochs=2)
    (trial,) = _rows({"00": 0.9}, tmp_path)
    trial["hyperparameters"] = MLP_TRIAL
    (x_train, y_train), (x_val, y_val) = digits.split("train"), digits.split("val")
    x, y = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    folds = np.array_split(np.random.default_rng(0).permutation(len(y)), 3)
    first = search._cross_validate(trial, options, digits, x, y, folds)
    # an MLP after 2 epochs on ~860 digits: about 0.9 (measured 0.91); 0.8 leaves 130 images
    assert len(first["correct"]) == len(y) and first["correct"].mean() >= 0.8, first["correct"].mean()
    assert sorted(p.name for p in (tmp_path / "00").iterdir()) == [f"rescore_fold{k}.json" for k in range(3)]
    trained = []
    real_fit = search._fit_candidate
    monkeypatch.setattr(search, "_fit_candidate", lambda *a, **k: trained.append(1) or real_fit(*a, **k))
    again = search._cross_validate(trial, options, digits, x, y, folds)
    assert not trained and np.array_equal(again["correct"], first["correct"]) and again["log_loss"] == first["log_loss"]
    fold = tmp_path / "00" / "rescore_fold1.json"
    recorded = json.loads(fold.read_text())
    fold.write_text(json.dumps({**recorded, "correct": [1] * (len(recorded["correct"]) - 1)}))  # one short
    third = search._cross_validate(trial, options, digits, x, y, folds)
    assert len(trained) == 1 and np.array_equal(third["correct"], first["correct"])  # deterministic retraining


@pytest.mark.parametrize("args, message", [
    (["--space", "filterz=8"], "error: unknown hyperparameter for mnist_cnn 'filterz'. Did you mean 'filters'?"),
    (["--space", "filters=8-x"], "error: --space filters: '8-x' is not layer widths joined by '-'"),
    (["--space", "optimizer=adam,adamw"], "error: --space optimizer: 'adamw' is not one of rmsprop, adam, sgd"),
    (["--space", "learning_rate=0.001,fast"], "error: --space learning_rate: 'fast' is not a number"),
    (["--space", "dense="], "error: --space dense: give at least one value"),
    # 28x28 digits, average-pooled to 14x14, then four 3x3 conv + pool blocks: nothing is left
    (["--space", "filters=8-16-32-64,stem_pool=2"], "error: search space: mnist_cnn with filters=8-16-32-64"),
    (["--device", "ssh://-oProxyCommand=x"], "error: --device: '-oProxyCommand=x' is not a host name"),
    (["--bench-seconds", "-1"], "error: --bench-seconds must lie in"),
    (["--max-latency-ratio", "0"], "error: --max-latency-ratio must lie in [0.01, 100]"),
    (["--max-latency-ratio", "0.3", "--max-latency-ms", "1"], "error: give --max-latency-ms or --max-latency-ratio"),
])
def test_bad_search_options_are_one_line_and_write_nothing(tmp_path, args, message):
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["search", *args, "--out", str(tmp_path / "search")])
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "search").exists()


@pytest.mark.parametrize("model", ["mnist_cnn", "mlp"])
def test_a_searchable_models_default_space_builds(digits, model):
    """A zoo model's default space: every architecture in it builds for digits, and the builder
    options really change the model (a space whose values were ignored would search one network
    many times). benchmarks/e2e checks every searchable model's space."""
    check_default_space(model, digits)


def check_default_space(model: str, digits) -> None:
    from pipeline.search.command import _check_builds
    from pipeline.search.space import SPACES, SearchOptions, _build

    space = SPACES[model]
    options = SearchOptions(model=model)
    options.validate()
    _check_builds(options, digits)
    smallest = {name: values[0] for name, values in space.items()}
    largest = {name: values[-1] for name, values in space.items()}
    sizes = [_build(model, digits, values).count_params() for values in (smallest, largest)]
    assert sizes[0] != sizes[1], model
