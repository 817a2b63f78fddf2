"""The task metrics: AUC and its DeLong interval, the partial AUC, per-group scores, MAE, and
the errors that say a metric cannot be computed."""
import numpy as np
import pytest

from edge_runtime.tasks import TaskError, delong, group_scores, partial_auc
from pipeline.core.tasks import compare, evaluate, normalize_task


def _scores(seed: int = 0, n: int = 400):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return np.round(rng.normal(size=n) + 0.9 * labels, 1), labels  # rounded: ties on purpose


def test_auc_and_partial_auc_match_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    scores, labels = _scores()
    aucs, covariance = delong(scores, labels)
    assert aucs[0] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert partial_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.1), abs=1e-12)
    assert 0 < covariance[0, 0] < 0.01


def test_delong_interval_covers_the_true_auc_about_95_percent_of_the_time():
    # scores of positives ~ N(1, 1), negatives ~ N(0, 1): AUC = Phi(1 / sqrt 2) = 0.7602
    from scipy.stats import norm

    truth, covered, trials = norm.cdf(1 / np.sqrt(2)), 0, 200
    rng = np.random.default_rng(1)
    for _ in range(trials):
        labels = np.r_[np.zeros(60, int), np.ones(60, int)]
        aucs, cov = delong(rng.normal(size=120) + labels, labels)
        half = 1.96 * np.sqrt(cov[0, 0])
        covered += aucs[0] - half <= truth <= aucs[0] + half
    assert 0.89 <= covered / trials <= 0.99  # 95% nominal; 200 trials: +-3 standard errors


def _reconstructions(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    noise = rng.normal(size=x.shape) * (0.1 + 0.2 * labels[:, None])
    return x, labels, (x + noise).astype(np.float32)


def test_an_autoencoder_is_scored_by_auc_and_a_copy_loses_nothing():
    x, labels, outputs = _reconstructions()
    found = evaluate("reconstruction", outputs, x, labels)
    assert found["metric"] == "auc" and found["value"] > 0.9
    assert found["ci95"][0] <= found["value"] <= found["ci95"][1]
    same = compare("reconstruction", outputs, outputs.copy(), x, labels, thresholds=(0.05, 0.05))
    assert same["metric_drop"] == 0 and same["decision_agreement"] == 1.0
    noisier = outputs + np.random.default_rng(2).normal(size=x.shape) * 0.3
    worse = compare("reconstruction", outputs, noisier, x, labels)
    low, high = worse["metric_drop_ci95"]
    assert worse["metric_drop"] > 0 and low <= worse["metric_drop"] <= high


def test_groups_are_scored_by_their_mean_and_must_hold_one_label():
    scores, labels = np.array([1.0, 3.0, 5.0, 7.0]), np.array([0, 0, 1, 1])
    grouped, grouped_labels = group_scores(scores, labels, np.array([0, 0, 1, 1]))
    assert grouped.tolist() == [2.0, 6.0] and grouped_labels.tolist() == [0, 1]
    with pytest.raises(TaskError, match="normal and anomalous"):
        group_scores(scores, labels, np.array([0, 1, 1, 1]))
    with pytest.raises(TaskError, match="3 entries for 4"):
        group_scores(scores, labels, np.array([0, 1, 1]))


def test_a_constant_score_or_one_sided_labels_leave_auc_undefined():
    x, labels, outputs = _reconstructions()
    with pytest.raises(TaskError, match="ROC AUC is undefined"):
        evaluate("reconstruction", x.copy(), x, labels)  # a perfect copy: every score 0
    with pytest.raises(TaskError, match="only normal"):
        evaluate("reconstruction", outputs, x, np.zeros(len(x), int))


def test_a_regression_is_scored_by_mae_and_its_drop_is_relative():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(300, 1))
    reference, output = y + 0.1 * rng.normal(size=y.shape), y + 0.2 * rng.normal(size=y.shape)
    found = compare("regression", reference, output, None, y)
    assert found["metric"] == "mae" and found["metric_value"] > found["keras_metric_value"]
    expected = (np.abs(output - y).mean() - np.abs(reference - y).mean()) / np.abs(reference - y).mean()
    assert found["metric_drop"] == pytest.approx(expected)
    assert found["metric_drop_ci95"][0] <= expected <= found["metric_drop_ci95"][1]


def test_task_names():
    assert normalize_task("autoencoder") == "reconstruction" and normalize_task(None) == "classifier"
    with pytest.raises(TaskError):
        normalize_task("segmentation")
