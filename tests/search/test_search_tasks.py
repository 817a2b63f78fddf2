"""A search of an autoencoder: trials judged by their int8 artifact's reconstruction error on
(normal) validation data, the winner and the baseline compared by test AUC, paired."""
import json


def test_an_autoencoder_search_ranks_by_validation_error_and_compares_by_auc(tmp_path):
    from pipeline.search import SearchOptions, search

    options = SearchOptions(model="autoencoder", dataset="digits-anomaly:0", trials=2, epochs=3, bench_seconds=0.2,
                            space={"width": [32, 64], "depth": [1], "bottleneck": [8], "sparsity": [0.0],
                                   "batch_size": [32], "learning_rate": [3e-3]})
    summary = search(options, tmp_path / "search")
    done = [t for t in summary["trials"] if t["status"] == "COMPLETED"]
    assert done and all("val_error" in t["metrics"] and "val_accuracy" not in t["metrics"] for t in done)
    best = summary["best"]
    assert best["trial"] == min(done, key=lambda t: t["metrics"]["val_error"])["trial"]
    assert best["test_metric"]["metric"] == "auc" and summary["baseline"]["test_metric"]["metric"] == "auc"
    test = summary["comparison"]["int8_test"]
    assert test["metric"] == "auc" and test["difference_ci95"][0] <= test["difference"] <= test["difference_ci95"][1]
    assert "test AUC" in (tmp_path / "search" / "search_report.md").read_text()
    sidecar = json.loads((tmp_path / "search" / "best" / "model_int8.tflite.json").read_text())
    assert sidecar["task"] == "reconstruction" and sidecar["anomaly"]["threshold"] > 0


def test_mlperf_autoencoders_default_space_builds():  # benchmarks/e2e builds every model's
    from pipeline.data.loaders import load_dataset
    from tests.search.test_search import check_default_space

    check_default_space("ad_autoencoder", load_dataset("digits-anomaly:0", task="reconstruction"))
