"""Killed and resumed, end to end: a `pipeline search` SIGKILLed after its first trial and a
`pipeline run` SIGKILLed in quantize both resume without repeating finished work and end with
the same results (benchmarks/kill_resume.py kills at N seeded random instants). In the suite:
a QAT fine-tune killed and resumed (tests/optimizing/test_qat.py), a search resumed from its
folds (tests/search/test_search.py), a cached and forced run (tests/running/test_run.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.core.fsutil import is_temporary
from tests.running.test_run import SMALL as RUN_SMALL
from tests.running.test_run import _artifact_hashes
from tests.search.test_search import PIPELINE, SMALL, _pipeline

pytest.importorskip("keras_tuner")


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _whole(path: Path) -> bool:
    """A file that opens as what its name says (benchmarks/kill_resume.py run kills at 20
    seeded random instants and checks the same)."""
    import zipfile

    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
    elif path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        Interpreter(model_path=str(path)).allocate_tensors()
    elif path.suffix == ".onnx":
        import onnx

        onnx.checker.check_model(str(path))
    return True


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

    from pipeline import search

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
    trained = {json.dumps({"hidden": h, "quantization": "int8", "sparsity": s}, sort_keys=True)
               for h, s in architectures}
    assert trained <= {key for key, m in screened.items() if m["over"] <= 0.05}  # only fitting ones
    best = summary["best"]
    # The MLP after 2 epochs scores 0.90-0.95 on the 144 validation images (measured); 0.8
    # leaves 14 images. The winner is the best validation score of the fitting trials, or,
    # when others are within its noise, the best of those re-scored across 3 folds.
    record = summary["rescoring"]
    assert max(t["metrics"]["val_accuracy"] for t in summary["trials"]) >= 0.8
    if record["folds"]:
        cv = {r["trial"]: r["cv_accuracy"] for r in record["rescored"]}
        assert len(cv) >= 2 and cv[best["trial"]] == max(cv.values()) and record["samples"] == 1437
        assert record["margin"]["over"] in cv and record["margin"]["over"] != best["trial"]
        assert sorted(p.name for p in (out / "tuner" / f"trial_{best['trial']}").glob("rescore_fold*")) == [
            f"rescore_fold{k}.json" for k in range(3)]
    else:
        assert best["val_accuracy"] == max(t["metrics"]["val_accuracy"] for t in summary["trials"])
    assert f"Chosen: {search.choice_text(summary)}." in (out / "search_report.md").read_text()
    test = summary["comparison"]["int8_test"]
    assert test["samples"] == 360 and test["difference_ci95"][0] <= test["difference"] <= test["difference_ci95"][1]
    run_dir = Path(best["run_dir"])
    assert (run_dir / "model.keras").exists() and (run_dir / "train.json").exists()
    from pipeline.cli import app

    assert CliRunner().invoke(app, ["verify", "--run", str(run_dir), "--quiet"]).exit_code == 0  # later stages go on
    assert summary["baseline"]["p50_ms"] > 0 and "p50_ratio" in summary["comparison"]
    assert len(summary["baseline"]["p50_ms_rounds"]) == len(best["p50_ms_rounds"]) == 3
    first = min(summary["trials"], key=lambda t: (-t["metrics"]["val_accuracy"], t["metrics"]["p50_ms"],
                                                  t["metrics"]["size_kb"]))
    assert first["trial"] in summary["front"]  # nothing beats the most accurate on accuracy
    assert (out / "search_accuracy_latency.png").stat().st_size > 0
    assert "| Trial | Status |" in (out / "search_report.md").read_text()

    # A search directory is not trusted: damaged tuner state is one line, not a traceback.
    (out / "tuner" / "oracle.json").write_text('{"ongoing_trials": ')
    damaged = CliRunner().invoke(app, [*SMALL, "--trials", "4", *budget, "--out", str(out)])
    assert damaged.exit_code == 2
    assert damaged.stderr == (f"error: {out / 'tuner'} holds a damaged search state (JSONDecodeError): "
                              f"choose a new --out\n")


@pytest.mark.slow
def test_killed_during_quantize_resumes_to_the_same_artifacts(small_run, tmp_path):
    result, _ = small_run
    sets = [item for s in RUN_SMALL for item in ("--set", s)]
    process = _cli(*sets, "--out", str(tmp_path / "run"), cwd=tmp_path)
    for line in process.stderr:
        if line.startswith("▶ quantize"):
            time.sleep(0.5)
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL
    state = json.loads((tmp_path / "run" / "pipeline_state.json").read_text())
    assert "train" in state["stages"] and "verify@base" not in state["stages"]
    for path in (tmp_path / "run").rglob("*"):  # every file under its own name is whole
        if path.is_file() and not is_temporary(path.name):
            assert _whole(path), path
    resumed = _cli(*sets, "--out", str(tmp_path / "run"), cwd=tmp_path)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-2000:]
    assert "• train" in stderr and "(cached)" in stderr and "report:" in stdout
    assert _artifact_hashes(tmp_path / "run") == _artifact_hashes(result.run_dir)
    # the killed write's hidden temporary file, if the kill left one, is gone
    assert not [p for p in (tmp_path / "run").rglob("*") if is_temporary(p.name)]
