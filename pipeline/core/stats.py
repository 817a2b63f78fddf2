"""The uncertainty of every figure the pipeline decides on, as pure functions.

An accuracy or an agreement measured on n test samples is a proportion: its 95% interval is
Wilson's score interval. An accuracy *drop* compares two models on the same samples, so its
interval is paired: only the discordant samples (right for one model, wrong for the other)
carry information, and their counts are resampled together (a multinomial bootstrap of the
four cells, with a recorded seed). A gate whose interval straddles its threshold is
``inconclusive``: the point estimate still decides the exit code, and the sample count that
would settle it is estimated from the observed variance.
"""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``successes / n``."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)  # exact at the ends, not 1 - 1e-16
    return low, high


def paired_drop(reference_correct: np.ndarray, test_correct: np.ndarray, *,
                resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """The accuracy drop (reference − test, on the same samples) with its paired 95% interval.

    Cells: both right, only the reference right (``lost``), only the test right (``gained``),
    both wrong. The drop is ``(lost − gained) / n``; its interval is the 2.5th and 97.5th
    percentiles of the drop over multinomial resamples of the four cells.
    """
    reference_correct = np.asarray(reference_correct, dtype=bool)
    test_correct = np.asarray(test_correct, dtype=bool)
    n = int(reference_correct.size)
    lost = int(np.sum(reference_correct & ~test_correct))
    gained = int(np.sum(~reference_correct & test_correct))
    drop = (lost - gained) / n if n else 0.0
    if n == 0 or lost + gained == 0:
        low = high = drop
    else:
        rng = np.random.default_rng(seed)
        cells = rng.multinomial(n, [lost / n, gained / n, 1.0 - (lost + gained) / n], size=resamples)
        drops = (cells[:, 0] - cells[:, 1]) / n
        low, high = (float(v) for v in np.percentile(drops, [2.5, 97.5]))
    return {"drop": drop, "ci95": [low, high], "lost": lost, "gained": gained, "n": n,
            "method": f"paired bootstrap of the discordant samples, {resamples} resamples, seed {seed}"}


def difference_ci95(p1: float, n1: int, p2: float, n2: int, z: float = Z95) -> list[float]:
    """The 95% interval of ``p1 − p2`` for proportions measured on *independent* samples
    (normal approximation; each variance at least that of one sample, so two perfect scores
    are not "certainly equal")."""
    variance = sum(max(p * (1 - p), 1.0 / n) / n for p, n in ((p1, max(n1, 1)), (p2, max(n2, 1))))
    half = z * math.sqrt(variance)
    return [p1 - p2 - half, p1 - p2 + half]


def within_noise(best: float, other: float, n: int, z: float = Z95) -> bool:
    """Whether ``other`` is indistinguishable from ``best``, both measured on ``n`` samples:
    the interval of their difference reaches zero."""
    return difference_ci95(best, n, other, n, z)[0] <= 1e-12


def proportion_samples_needed(p: float, threshold: float, z: float = Z95) -> int | None:
    """Test samples at which a proportion measured as ``p`` would have a Wilson interval clear
    of ``threshold``; None when ``p`` is the threshold itself (no sample count settles it)."""
    if abs(p - threshold) < 1e-12:
        return None

    def clear(n: int) -> bool:
        low, high = wilson(round(p * n), n, z)
        return low >= threshold if p > threshold else high < threshold

    high = 1
    while not clear(high):
        high *= 2
        if high > 1 << 40:
            return None
    low = high // 2
    while low + 1 < high:  # the smallest n that clears it
        middle = (low + high) // 2
        low, high = (low, middle) if clear(middle) else (middle, high)
    return high


def drop_samples_needed(paired: dict, threshold: float, z: float = Z95) -> int | None:
    """The same for a paired drop: its per-sample variance from the discordant fractions."""
    n = paired["n"]
    if not n:
        return None
    gap = abs(paired["drop"] - threshold)
    if gap < 1e-12:
        return None
    a, b = paired["lost"] / n, paired["gained"] / n
    variance = max(a + b - (a - b) ** 2, 1.0 / n)
    return int(math.ceil(z * z * variance / (gap * gap)))


def verdict(op: str, threshold: float, value: float, ci95: list[float] | None, exact: bool = False) -> str:
    """``pass`` or ``fail`` when the whole interval is on one side of the threshold (or the
    figure is exact), ``inconclusive`` when the interval straddles it."""
    passed = value <= threshold + 1e-12 if op == "<=" else value >= threshold - 1e-12
    if exact or ci95 is None:
        return "pass" if passed else "fail"
    low, high = ci95
    if op == "<=":
        clear_pass, clear_fail = high <= threshold + 1e-12, low > threshold + 1e-12
    else:
        clear_pass, clear_fail = low >= threshold - 1e-12, high < threshold - 1e-12
    return "pass" if clear_pass else "fail" if clear_fail else "inconclusive"
