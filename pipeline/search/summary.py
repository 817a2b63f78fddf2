"""What a search says: its one-line choice, the report's search section, search_report.md
and its accuracy-latency figure."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.fsutil import write_bytes, write_text
from pipeline.search.space import architecture


def describe(summary: dict) -> str:
    """One line for a report: what the search tried and what it chose."""
    done = sum(t["status"] == "COMPLETED" for t in summary["trials"])
    baseline, best = summary["baseline"], summary.get("best")
    text = (f"{done} trials ({summary['search_seconds']:.0f} s); {summary['options']['model']} as it comes: "
            f"{test_figure(baseline)}, int8 p50 {baseline['p50_ms']:.4f} ms")
    if not best:
        return text + "; no trial fits the budgets"
    values = ", ".join(f"{k}={v}" for k, v in best["hyperparameters"].items())
    text += (f"; chosen trial {best['trial']} ({values}): {test_figure(best)}, "
             f"int8 p50 {best['p50_ms']:.4f} ms (×{summary['comparison']['p50_ratio']:.2f})")
    chosen = choice_text(summary)
    return text + (f"; {chosen}" if chosen else "")


def choice_text(summary: dict) -> str | None:
    """How the winner was chosen and its margin over the runner-up, with the interval."""
    record = summary.get("rescoring")
    if not record or not summary.get("best"):
        return None
    margin = record.get("margin")
    if record.get("folds"):
        text = (f"re-scored trials {', '.join(r['trial'] for r in record['rescored'])} (within the noise of "
                f"{record['validation_samples']} validation samples) by {record['folds']}-fold cross-validation "
                f"on {record['samples']} samples")
    else:
        text = f"best on {record['validation_samples']} validation samples ({record['reason']})"
    if margin and "error_ratio" in margin:
        text += f"; its validation error {margin['error_ratio']:.2f}x trial {margin['over']}'s"
    elif margin:
        low, high = (100 * v for v in margin["ci95"])
        text += (f"; margin over trial {margin['over']}: {100 * margin['difference']:+.2f} points "
                 f"[{low:+.2f}, {high:+.2f}]")
    return text


def _trial_rows(trials: list[dict], best: str | None) -> list[dict]:
    """Finished trials as report rows, each marked on or off the front (validation accuracy,
    p50, size)."""
    from pipeline.device.figures import pareto

    rows = [{"variant": f"trial {t['trial']}", "trial": t["trial"], "artifact": "model_int8",
             "metric": "accuracy" if "val_accuracy" in t["metrics"] else "error",
             "value": t["metrics"].get("val_accuracy", t["metrics"].get("val_error")),
             "score": t["metrics"].get("val_accuracy", -t["metrics"].get("val_error", 0.0)),
             "p50_ms": t["metrics"].get("p50_ms_pooled", t["metrics"]["p50_ms"]), "size_kb": t["metrics"]["size_kb"],
             "recommended": t["trial"] == best}
            for t in trials if t["status"] == "COMPLETED"]
    pareto(rows)
    return rows


def _report(summary: dict, out: Path) -> None:
    """search_report.md and the accuracy-vs-latency scatter of every trial with its front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.device.figures import accuracy_latency_figure, png_bytes

    best = summary.get("best")
    rows = _trial_rows(summary["trials"], best["trial"] if best else None)
    figure = accuracy_latency_figure(plt, rows) if rows else None
    if figure is not None:
        axis = figure.axes[0]
        axis.set_ylabel("validation accuracy (%)" if rows[0]["metric"] == "accuracy" else "validation error")
        budget = summary["options"].get("max_latency_ms")
        if budget:
            axis.axvline(budget, color="tab:red", linestyle="--", linewidth=1, label=f"latency budget {budget:g} ms")
            axis.legend(loc="lower right", fontsize=8)
        write_bytes(out / "search_accuracy_latency.png", png_bytes(figure))
    plt.close("all")
    lines = ["# Search report", "", "| Trial | Status | Hyperparameters | Validation | p50 ms | "
             "Architecture p50 ms (timings) | Size KiB | Fits |", "|---|---|---|---|---|---|---|---|"]
    pools = summary.get("pooled_timings", {})
    for t in summary["trials"]:
        m = t["metrics"]
        pool = pools.get(architecture(summary["options"]["model"], t["hyperparameters"])) if m else None
        pooled = f"{pool['p50_ms']:.4f} ({pool['timings']})" if pool else "–"
        lines.append(f"| {t['trial']} | {t['status']} | {json.dumps(t['hyperparameters'])} | "
                     + (f"{_val(m)} | {m['p50_ms']:.4f} | {pooled} | {m['size_kb']:.1f} | "
                        f"{'yes' if m.get('feasible') else 'no'} |" if m else "– | – | – | – | – |"))
    baseline, timing, screened = summary["baseline"], summary["timing"], summary["screened"]
    lines += ["", "Fits: decided on the architecture's p50, the median of every timing of it (its untrained "
                  "twin's and each trial's that has it): one architecture timed near a budget lands on either "
                  "side of it from one process to the next."]
    lines += ["", f"Front (validation figure, p50, size: no other trial is better in one without being "
                  f"worse in another): trials {', '.join(summary['front']) or 'none'}."]
    if screened["architectures"]:
        lines += ["", f"Screened: {screened['architectures']} architectures measured untrained before any "
                      f"training; " + (f"{screened['over_budget']} of them were more than {screened['tolerance']:.0%} "
                                       f"over a budget and never trained." if screened["over_budget"] else
                                       f"all were within {screened['tolerance']:.0%} of the budgets.")]
    lines += ["", f"Latency: p50 at batch 1 on one thread, {timing['location']}"
              + (f" ({timing['cpu_model']})" if timing.get("cpu_model") else "") + "; the baseline and the best "
              f"timed alternately, median of {len(baseline['p50_ms_rounds'])}.", "",
              f"Baseline ({summary['options']['model']} as it comes): {test_figure(baseline)}, "
              f"int8 p50 {baseline['p50_ms']:.4f} ms."]
    if best:
        lines.append(f"Best (trial {best['trial']}, run `{best['run_dir']}`): {test_figure(best)}, "
                     f"int8 p50 {best['p50_ms']:.4f} ms "
                     f"(×{summary['comparison']['p50_ratio']:.2f} the baseline's).")
        lines.append(f"Chosen: {choice_text(summary)}.")
        test = summary["comparison"]["int8_test"]
        if "metric" in test:  # an autoencoder's AUC or a regression's MAE
            lines.append(f"Int8 artifacts on {test['samples']} test samples: {test['metric']} baseline "
                         f"{_value(test['baseline'])}, best {_value(test['best'])}; the best's gain "
                         f"{test['difference']:+.4f} [{test['difference_ci95'][0]:+.4f}, "
                         f"{test['difference_ci95'][1]:+.4f}] ({test['method']}).")
        else:
            lines.append(f"Int8 artifacts on {test['samples']} test samples: baseline {_percent(test['baseline'])}, "
                         f"best {_percent(test['best'])}; difference {100 * test['difference']:+.2f} points "
                         f"[{100 * test['difference_ci95'][0]:+.2f}, {100 * test['difference_ci95'][1]:+.2f}] "
                         f"(paired).")
    else:
        lines.append("No trial fits the budgets.")
    lines += ["", "![accuracy vs latency](search_accuracy_latency.png)", ""]
    write_text(out / "search_report.md", "\n".join(lines))


def test_figure(entry: dict) -> str:
    """``test accuracy 97.50%``, or another task's ``test AUC 0.9907 [0.9731, 1.0000]``."""
    scored = entry.get("test_metric")
    if isinstance(scored, dict):
        from pipeline.core.tasks import describe_metric

        return describe_metric(scored)
    return f"test accuracy {entry['test_accuracy']:.2%}"


def _val(metrics: dict) -> str:
    return f"{metrics['val_accuracy']:.2%}" if "val_accuracy" in metrics else f"error {metrics['val_error']:.5g}"


def _value(figure: dict) -> str:
    low, high = figure["ci95"]
    return f"{figure['value']:.4f} [{low:.4f}, {high:.4f}]"


def _percent(figure: dict) -> str:
    low, high = figure["ci95"]
    return f"{figure['accuracy']:.2%} [{low:.2%}, {high:.2%}]"
