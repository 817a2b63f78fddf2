"""Long end-to-end paths moved out of the suite to keep it short on 2 slow cores (each keeps a
fast test there): `pipeline run` continuing from a search's winner (tests/search keeps the
search's own cases, tests/search/test_search_tasks.py a whole search), and two local jax workers
training one run (tests/training keeps the TensorFlow pair)."""
import json
from pathlib import Path

from tests.training import test_train as training


def test_two_local_jax_workers_train_one_run(tmp_path):
    training.test_two_local_workers_train_one_run("jax", tmp_path)


def test_pipeline_run_continues_from_the_searched_model(tmp_path):
    """With search.enabled, `pipeline run` searches instead of training the model as it comes,
    goes on from the winner, reports the search, and does not search again when nothing changed."""
    from pipeline import load_config
    from pipeline.running.orchestrator import run

    overrides = ["train.model=mlp", "search.enabled=true", "search.trials=2", "search.epochs=2", "search.rescore=0",
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
