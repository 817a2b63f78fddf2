"""pipeline search: trials that learn and are measured, a winner that is a normal run, a
search that resumes after a kill without repeating trials, and a chief with two workers."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("keras_tuner")
PIPELINE = [sys.executable, "-m", "pipeline.launcher"]
SMALL = ["search", "--model", "mlp", "--epochs", "2", "--bench-seconds", "0.1", "--quiet"]


def _pipeline(*args, env=None, **kwargs):
    return subprocess.run([*PIPELINE, *map(str, args)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})}, **kwargs)


def _finished(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("tuner/trial_*/measurement.json"))


def test_a_killed_search_resumes_and_measures_every_trial_and_the_winner_is_a_run(tmp_path):
    out = tmp_path / "search"
    # int8 MLP on 28x28 inputs: about 1 KiB per unit of the first hidden layer, so a 40 KiB
    # budget fits hidden 32 (pruned or not) and 64 pruned to 32, and no other architecture
    budget = ["--max-size-kb", "40", "--max-latency-ms", "1000"]
    command = [*PIPELINE, *SMALL, "--trials", "3", *budget, "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not _finished(out) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {name: (out / "tuner" / name / "measurement.json").read_bytes() for name in _finished(out)}
    assert before and len(before) < 3, "the kill came after the search had finished"
    done = _pipeline(*SMALL, "--trials", "3", *budget, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, content in before.items():  # finished trials were not run again
        assert (out / "tuner" / name / "measurement.json").read_bytes() == content
    runs = (out / "tuner" / "trials.log").read_text().split()[0::2]
    assert all(runs.count(name) == 1 for name in before)

    summary = json.loads((out / "search.json").read_text())
    assert len(summary["trials"]) == 3
    for trial in summary["trials"]:
        metrics = trial["metrics"]
        assert trial["status"] == "COMPLETED" and metrics["p50_ms"] > 0 and metrics["size_kb"] > 0
        assert set(trial["hyperparameters"]) >= {"hidden", "learning_rate", "optimizer", "sparsity"}
        assert metrics["size_kb"] <= 40  # candidates over budget were screened out untrained
    architectures = {(t["hyperparameters"]["hidden"], t["hyperparameters"]["sparsity"]) for t in summary["trials"]}
    assert len(architectures) == 3  # a new architecture each trial while fitting ones are left
    screened = json.loads((out / "screen.json").read_text())
    assert summary["screened"]["over_budget"] == sum(m["over"] > 0.05 for m in screened.values())
    trained = {json.dumps({"hidden": h, "quantization": "int8", "sparsity": s}, sort_keys=True) for h, s in architectures}
    assert trained <= {key for key, m in screened.items() if m["over"] <= 0.05}  # only fitting ones
    best = summary["best"]
    # The MLP after 2 epochs scores 0.90-0.95 on the 144 validation images (measured); 0.8
    # leaves 14 images. The winner is the best validation score of the fitting trials.
    assert best["val_accuracy"] == max(t["metrics"]["val_accuracy"] for t in summary["trials"]) >= 0.8
    run_dir = Path(best["run_dir"])
    assert (run_dir / "model.keras").exists() and (run_dir / "train.json").exists()
    assert _pipeline("verify", "--run", run_dir, "--quiet").returncode == 0  # later stages go on
    assert summary["baseline"]["p50_ms"] > 0 and "p50_ratio" in summary["comparison"]
    assert len(summary["baseline"]["p50_ms_rounds"]) == len(best["p50_ms_rounds"]) == 3
    first = min(summary["trials"], key=lambda t: (-t["metrics"]["val_accuracy"], t["metrics"]["p50_ms"],
                                                  t["metrics"]["size_kb"]))
    assert first["trial"] in summary["front"]  # nothing beats the most accurate on accuracy
    assert (out / "search_accuracy_latency.png").stat().st_size > 0
    assert "| Trial | Status |" in (out / "search_report.md").read_text()

    # A search directory is not trusted: damaged tuner state is one line, not a traceback.
    (out / "tuner" / "oracle.json").write_text('{"ongoing_trials": ')
    from pipeline.cli import app

    damaged = CliRunner().invoke(app, [*SMALL, "--trials", "4", *budget, "--out", str(out)])
    assert damaged.exit_code == 2
    assert damaged.stderr == f"error: {out / 'tuner'} holds a damaged search state (JSONDecodeError): choose a new --out\n"


def test_a_chief_and_two_workers_share_one_search(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "search"
    common = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    command = [*PIPELINE, *SMALL, "--trials", "4", "--out", str(out)]
    chief = subprocess.Popen(command, env={**os.environ, **common, "KERASTUNER_TUNER_ID": "chief"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and chief.poll() is None:  # the chief's oracle listens first
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    workers = [subprocess.Popen(command, env={**os.environ, **common, "KERASTUNER_TUNER_ID": f"tuner{i}"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err[-3000:]
    _, err = chief.communicate(timeout=900)
    assert chief.returncode == 0, err[-3000:]
    summary = json.loads((out / "search.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED"] * 4
    runs = (out / "tuner" / "trials.log").read_text().split()[0::2]
    assert sorted(runs) == sorted(set(runs)) and len(runs) == 4  # no trial ran twice
    ran_by = {json.loads(p.read_text())["tuner_id"] for p in out.glob("tuner/trial_*/measurement.json")}
    assert ran_by <= {"tuner0", "tuner1"} and ran_by  # the workers ran them, the chief served


@pytest.mark.parametrize("args, message", [
    (["--space", "filterz=8"], "error: unknown hyperparameter for mnist_cnn 'filterz'. Did you mean 'filters'?"),
    (["--space", "filters=8-x"], "error: --space filters: '8-x' is not layer widths joined by '-'"),
    (["--space", "optimizer=adam,sgd"], "error: --space optimizer: 'sgd' is not one of adam, rmsprop"),
    (["--space", "learning_rate=0.001,fast"], "error: --space learning_rate: 'fast' is not a number"),
    (["--space", "dense="], "error: --space dense: give at least one value"),
    # 28x28 digits, average-pooled to 14x14, then four 3x3 conv + pool blocks: nothing is left
    (["--space", "filters=8-16-32-64,stem_pool=2"], "error: search space: mnist_cnn with filters=8-16-32-64"),
    (["--device", "ssh://-oProxyCommand=x"], "error: --device: '-oProxyCommand=x' is not a host name"),
    (["--bench-seconds", "-1"], "error: --bench-seconds must lie in"),
])
def test_bad_search_options_are_one_line_and_write_nothing(tmp_path, args, message):
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["search", *args, "--out", str(tmp_path / "search")])
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "search").exists()


def test_pipeline_run_continues_from_the_searched_model(tmp_path):
    """With search.enabled, `pipeline run` searches instead of training the model as it comes,
    goes on from the winner, reports the search, and does not search again when nothing changed."""
    from pipeline import load_config
    from pipeline.orchestrator import run

    overrides = ["train.model=mlp", "search.enabled=true", "search.trials=2", "search.epochs=2",
                 "search.bench_seconds=0.2", "search.space.hidden=32,64", "constraints.max_latency_ms=50",
                 "prune.sparsity=0", "quantize.modes=int8", "convert.targets=tflite", "bench.runs=20",
                 "bench.min_seconds=0"]
    result = run(load_config(overrides=overrides), out=tmp_path / "run")
    run_dir = result.run_dir
    summary = json.loads((run_dir / "search" / "search.json").read_text())
    assert {t["hyperparameters"]["hidden"] for t in summary["trials"]} <= {"32", "64"}  # the user's space
    winner = Path(summary["best"]["run_dir"])
    assert (run_dir / "model.keras").read_bytes() == (winner / "model.keras").read_bytes()
    assert result.passed and (run_dir / "model_int8.tflite").exists()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["search"].startswith("2 trials") and f"chosen trial {summary['best']['trial']}" in report["search"]
    assert "Search: 2 trials" in (run_dir / "report.md").read_text()
    assert (run_dir / "report" / "search_trials.png").stat().st_size > 0
    again = run(load_config(overrides=overrides), out=run_dir)
    assert {r.name: r.status for r in again.stages}["search"] == "cached"
    # Searching off again: the model is trained as it comes, and the report no longer claims
    # the search that is still on disk chose it.
    plain = run(load_config(overrides=[o for o in overrides if not o.startswith("search.")]), out=run_dir)
    assert {r.name: r.status for r in plain.stages}["train"] == "ran"
    assert json.loads((run_dir / "report.json").read_text())["search"] is None
    assert "Search:" not in (run_dir / "report.md").read_text()
    assert not (run_dir / "report" / "search_trials.png").exists()


def test_every_searchable_model_has_a_default_space_that_builds(digits):
    """Each zoo model's default space: every architecture in it builds for digits, and the
    builder options really change the model (a space whose values were ignored would search
    one network many times)."""
    from pipeline.search import SPACES, SearchOptions, _build, _check_builds

    for model, space in SPACES.items():
        options = SearchOptions(model=model)
        options.validate()
        _check_builds(options, digits)
        smallest = {name: values[0] for name, values in space.items()}
        largest = {name: values[-1] for name, values in space.items()}
        sizes = [_build(model, digits, values).count_params() for values in (smallest, largest)]
        assert sizes[0] != sizes[1], model
