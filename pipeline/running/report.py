"""``report.md`` and a self-contained ``report.html``: what pruning and quantization did to
accuracy, size and latency, the Pareto front, the recommended artifact, plots, gates,
environment and manifest. ``pipeline report [RUN]`` rebuilds it from the run's JSON files."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from pipeline.core import schemas
from pipeline.core.fsutil import read_json, sha256_file, write_bytes, write_json
from pipeline.core.tasks import HIGHER_IS_BETTER
from pipeline.device.figures import pareto
from pipeline.running.recommend import export_pick, recommend, row_name
from pipeline.running.report_plots import write_plots
from pipeline.running.report_quantization import quantization_lines


def _variants(run_dir: Path) -> list[Path]:
    found = [run_dir] + sorted(p for p in (run_dir / "variants").glob("*") if p.is_dir())
    return [v for v in found if (v / "verify.json").exists()]


def task_line(train: dict) -> str:
    """``test AUC 0.9907 [0.9731, 1.0000]`` from a run that is not a classifier's."""
    scored = train.get("test_metric")
    if not isinstance(scored, dict):
        return "test loss " + (f"{train['test_loss']:.5f}" if isinstance(train.get("test_loss"), float) else "–")
    from pipeline.core.tasks import describe_metric

    return describe_metric(scored)


def collect_rows(run_dir: Path, bench_name: str = "bench.json") -> tuple[list[dict[str, Any]], float | None]:
    """One row per artifact per variant, with accuracy, Δ against the unpruned Keras model,
    agreement, size and latency (the first thread count benched, from ``bench_name``)."""
    base_accuracy = schemas.load(run_dir / "train.json", schemas.TRAIN_JSON).get("test_accuracy")
    rows = []
    for variant in _variants(run_dir):
        verify = schemas.load(variant / "verify.json", schemas.VERIFY_JSON, what="rerun `pipeline verify`")
        bench = (schemas.load(variant / bench_name, schemas.BENCH_JSON, what="rerun `pipeline bench`")
                 if (variant / bench_name).exists() else {"results": []})
        latency = {}
        for result in bench["results"]:
            latency.setdefault(result["artifact"], result)
        for artifact in verify["artifacts"]:
            timing = latency.get(artifact["artifact"], {})
            value = artifact["metric_value"]
            rows.append({
                "variant": "base" if variant == run_dir else variant.name,
                "dir": str(variant.relative_to(run_dir)) if variant != run_dir else ".",
                "artifact": artifact["artifact"], "mode": artifact["mode"], "format": artifact["format"],
                "passed": artifact["passed"], "size_kb": artifact["size_bytes"] / 1024,
                "metric": artifact["metric"], "value": value,
                # higher is better for the front: accuracy or AUC as it is, an error negated
                "score": value if HIGHER_IS_BETTER.get(artifact["metric"], False) else -value,
                "delta": (value - base_accuracy) if base_accuracy is not None and
                         artifact["metric"] == "accuracy" else -artifact["metric_drop"],
                "agreement": (artifact["top1_agreement"] if artifact.get("top1_agreement") is not None
                              else artifact.get("decision_agreement")),
                "p50_ms": timing.get("p50_ms"), "p90_ms": timing.get("p90_ms"),
                "p50_spread_ms": timing.get("p50_spread_ms"), "p50_ci95_ms": timing.get("p50_ci95_ms"),
                "threads": timing.get("threads"),
                "failed_gates": [g for g, r in artifact["gates"].items() if not r["passed"]],
                "inconclusive_gates": [g for g, r in artifact["gates"].items() if r.get("verdict") == "inconclusive"],
                # 95% intervals (verify.json): Wilson for proportions; Δ only where it is the
                # paired drop against its own source (the base variant's Keras model)
                "value_ci95": artifact.get("accuracy_ci95") or artifact.get("metric_ci95"),
                "agreement_ci95": artifact.get("top1_agreement_ci95") or artifact.get("decision_agreement_ci95"),
                "delta_ci95": ([-artifact["metric_drop_ci95"][1], -artifact["metric_drop_ci95"][0]]
                               if variant == run_dir and artifact.get("metric_drop_ci95") else None),
                **_micro_memory(artifact.get("micro") or {}),
                "gpu_delegate": artifact.get("gpu_delegate"),
                "verified_batch": _verified_batch(artifact),
            })
    reference = next((r for r in rows if r["variant"] == "base" and r["artifact"] == "model_float32.tflite"
                      and r["p50_ms"]), None)
    from pipeline.device.timing import faster

    for row in rows:
        row["speedup"] = (reference["p50_ms"] / row["p50_ms"]
                          if reference and row["p50_ms"] else None)
        # inside the rounds' spread the two are equally fast, whatever the ratio says
        row["speedup_tie"] = bool(reference and row["p50_ms"] and row is not reference
                                  and not faster(row, reference) and not faster(reference, row))
    return rows, base_accuracy


def _verified_batch(artifact: dict) -> int:
    """The samples per invoke verify ran the artifact with (its outputs identical to one at a
    time there), 1 when verify.json does not say or says something out of range."""
    from pipeline.checking.verify import VERIFY_BATCH

    inference = artifact.get("inference")
    batch = inference.get("batch") if isinstance(inference, dict) else None
    return batch if isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= VERIFY_BATCH else 1


def timing_host(run_dir: Path, bench_name: str = "bench.json") -> str | None:
    """Where the report's latencies were measured (they hold for that machine only)."""
    path = run_dir / bench_name
    if not path.exists():
        return None
    bench = schemas.load(path, schemas.BENCH_JSON, what="rerun `pipeline bench`")
    device = bench.get("device") if isinstance(bench.get("device"), dict) else {}
    timing = bench.get("timing") if isinstance(bench.get("timing"), dict) else {}
    where = str(device.get("location", "local"))
    cpu = ", ".join(str(device[k]) for k in ("cpu_model", "machine") if device.get(k))
    cores = f", {device['cpu_count']} cores" if isinstance(device.get("cpu_count"), int) else ""
    rounds = (f"{timing['rounds']} interleaved rounds, each in a fresh process; the figure is the median of "
              f"the rounds' p50 and differences within their spread are ties" if timing.get("rounds")
              else "one timing window per artifact")
    return f"{where} ({cpu}{cores}): {rounds}. They hold for that machine only."


def _micro_memory(micro: dict) -> dict:
    """A row's TFLite Micro numbers: measured arena and flash (None when not measured)."""
    measured = "arena_bytes" in micro and "flash_bytes" in micro
    return {"arena_kb": micro["arena_bytes"] / 1024 if measured else None,
            "flash_kb": micro["flash_bytes"] / 1024 if measured else None,
            "tflm_agreement": micro.get("top1_agreement")}


def recovery_costs(run_dir: Path, rows: list[dict]) -> list[dict]:
    """Per variant whose int8 was recovered: which layers were raised, and what the mixed
    model costs in size and latency against the full int8 model."""
    costs = []
    for variant, stage in ((v, stage) for v in _variants(run_dir) for stage in ("quantize.json", "convert.json")):
        record = variant / stage
        recovery = (schemas.load(record, {"?recovery": Any, "*": Any}).get("recovery")
                    if record.exists() else None)
        if not isinstance(recovery, dict) or recovery.get("status") != "recovered":
            continue
        schemas.check(recovery, schemas.RECOVERED, record, what=f"rerun `pipeline {record.stem}`")
        label = "base" if variant == run_dir else variant.name
        by_name = {r["artifact"]: r for r in rows if r["variant"] == label}
        mixed, full = by_name.get(recovery["artifact"]), by_name.get(recovery["artifact"].replace("_mixed", ""))
        if not (mixed and full):
            continue
        costs.append({
            "variant": label, "artifact": recovery["artifact"],
            "raised": [f"{layer['op']} ({layer['precision']})" for layer in recovery["raised"]],
            "raisable_layers": recovery["raisable_layers"],
            "size_ratio": mixed["size_kb"] / full["size_kb"],
            "p50_ratio": (mixed["p50_ms"] / full["p50_ms"]) if mixed["p50_ms"] and full["p50_ms"] else None,
            "validation_agreement": ((recovery.get("full_int8") or {}).get("top1_agreement"),
                                     (recovery.get("validation") or {}).get("top1_agreement")),
        })
    return costs


def describe_recovery(cost: dict) -> str:
    before, after = cost["validation_agreement"]
    agreement = ("" if before is None or after is None
                 else f"; validation agreement {before:.2%} → {after:.2%}")
    latency = "" if cost["p50_ratio"] is None else f", p50 ×{cost['p50_ratio']:.2f}"
    return (f"{cost['variant']}/{cost['artifact']}: {len(cost['raised'])} of {cost['raisable_layers']} "
            f"layers raised ({', '.join(cost['raised'])}); against full int8: size "
            f"×{cost['size_ratio']:.2f}{latency}{agreement}")


def build_report(run_dir: Path, target: str | None = None) -> dict[str, Any]:
    """report.md, report.html, report.json and the plots, with the run locked; ``target``
    replaces the config's constraints.target for the recommendation."""
    from pipeline.core import rundir
    from pipeline.formats.targets import target as check_target

    if target is not None:
        check_target(target)
    with rundir.locked(Path(run_dir)):
        return _build_report(Path(run_dir), target)


# A Pi's recommendation is timed on the Pi where bench.devices named one (its first device).
DEVICE_BENCH = {"pi": "bench_device1.json"}


def _build_report(run_dir: Path, target: str | None = None) -> dict[str, Any]:
    config = (schemas.load(run_dir / "config.json", schemas.CONFIG_JSON, what="rerun `pipeline run`")
              if (run_dir / "config.json").exists() else {})
    constraints = dict(config.get("constraints", {"max_accuracy_drop": 0.01}))
    if target is not None:
        constraints["target"] = target
    bench_name = DEVICE_BENCH.get(constraints.get("target"), "bench.json")
    bench_name = bench_name if (run_dir / bench_name).exists() else "bench.json"
    rows, base_accuracy = collect_rows(run_dir, bench_name)
    pareto(rows)
    recommendation = recommend(rows, constraints)
    chosen = recommendation.chosen
    board = export_pick(rows, constraints, recommendation)
    for row in rows:
        row["recommended"] = row is chosen
    train = schemas.load(run_dir / "train.json", schemas.TRAIN_JSON)
    manifest = schemas.load(run_dir / "manifest.json", schemas.MANIFEST_JSON, what="retrain the run")
    plots = write_plots(run_dir, rows, train, chosen, searched=_searched(run_dir))
    summary = {"recommended": row_name(chosen) if chosen else None, "target": recommendation.target,
               "why": recommendation.why if chosen else recommendation.none_line(),
               "left_out": recommendation.reasons,
               # what `pipeline export` (and export.c_array) writes for a board, and why
               "board": {"artifact": row_name(board.chosen) if board.chosen else None,
                         "why": board.why if board.chosen else board.none_line()},
               "exported": bool((config.get("export") or {}).get("c_array")),
               "constraints": constraints, "keras_accuracy": base_accuracy, "rows": rows,
               "passed": all(r["passed"] for r in rows), "recovery": recovery_costs(run_dir, rows),
               "search": _search_line(run_dir), "latency_measured_on": timing_host(run_dir, bench_name),
               "quantization": quantization_lines(run_dir, _variants(run_dir))}
    write_json(run_dir / "report.json", summary)
    write_bytes(run_dir / "report.md", _markdown(run_dir, summary, train, manifest, plots).encode())
    write_bytes(run_dir / "report.html", _html(run_dir, summary, train, manifest, plots).encode())
    return summary


def _searched(run_dir: Path) -> bool:
    """Whether this run's model is its search's winner (a later plain training replaces it
    and leaves the old search behind)."""
    winner, model = run_dir / "search" / "best" / "model.keras", run_dir / "model.keras"
    return winner.is_file() and model.is_file() and sha256_file(winner) == sha256_file(model)


def _search_line(run_dir: Path) -> str | None:
    """What the search that chose this run's model found, when one did."""
    path = run_dir / "search" / "search.json"
    if not path.is_file() or not _searched(run_dir):
        return None
    from pipeline.search import describe

    try:
        return describe(read_json(path))
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"{path} is unreadable"


# -- text ----------------------------------------------------------------------------------

_COLUMNS = ("Variant", "Format", "Status", "Size", "Accuracy", "Δ", "Agreement", "p50 ms", "p90 ms",
            "Speed-up", "TFLM arena / flash", "GPU delegate", "Pareto")


_METRIC_LABELS = {"accuracy": "Accuracy", "auc": "AUC", "mae": "MAE", "reconstruction_mse": "Reconstruction MSE"}


def _columns(rows: list[dict]) -> tuple[str, ...]:
    """The table's columns, its metric column named for the run's task."""
    metric = rows[0]["metric"] if rows else "accuracy"
    return tuple(_METRIC_LABELS.get(metric, metric) if c == "Accuracy" else c for c in _COLUMNS)


def _cells(row: dict) -> list[str]:
    def number(value, fmt):
        return "–" if value is None else format(value, fmt)
    status = "✓" if row["passed"] else "✗ " + ", ".join(row["failed_gates"])
    if row.get("inconclusive_gates"):
        status += " (? " + ", ".join(row["inconclusive_gates"]) + ")"
    name = row["artifact"] + (" ★ recommended" if row["recommended"] else "")
    value = (f"{row['value'] * 100:.2f}%{_ci(row.get('value_ci95'))}" if row["metric"] == "accuracy"
             else f"{row['value']:.4f}{_ci(row.get('value_ci95'), percent=False)}")
    delta = (f"{row['delta'] * 100:+.2f} pt{_ci(row.get('delta_ci95'), signed=True)}" if row["metric"] == "accuracy"
             else f"{row['delta']:+.4f}{_ci(row.get('delta_ci95'), signed=True, percent=False)}")
    agreement = "–" if row["agreement"] is None else f"{row['agreement'] * 100:.2f}%{_ci(row.get('agreement_ci95'))}"
    return [row["variant"], name, status, f"{row['size_kb']:.1f} KiB", value, delta, agreement,
            number(row["p50_ms"], ".3f"), number(row["p90_ms"], ".3f"),
            "–" if row["speedup"] is None else f"{row['speedup']:.2f}x" + (" (tie)" if row.get("speedup_tie") else ""),
            _micro_cell(row), gpu_summary(row.get("gpu_delegate")),
            "●" if row["pareto"] else ""]


def gpu_summary(record) -> str:
    from pipeline.checking.gpu_delegate import summary

    return summary(record if isinstance(record, dict) else None)


def _ci(ci95, signed: bool = False, percent: bool = True) -> str:
    """`` [low, high]`` in percent (points) or as they are, or nothing where no interval was recorded."""
    if not ci95:
        return ""
    form = ("+" if signed else "") + (".2f" if percent else ".4f")
    scale = 100 if percent else 1
    low, high = ci95[0] * scale + 0.0, ci95[1] * scale + 0.0  # + 0.0: no "-0.00"
    return f" [{format(low, form)}, {format(high, form)}]"


def _micro_cell(row: dict) -> str:
    if row.get("arena_kb") is None:
        return "–"
    return f"{row['arena_kb']:.1f} / {row['flash_kb']:.1f} KiB"


def describe_constraints(constraints: dict) -> str:
    """``max accuracy drop 1.00 pt, max p50 5 ms`` rather than a Python dict."""
    parts = []
    if constraints.get("max_accuracy_drop") is not None:
        parts.append(f"max accuracy drop {constraints['max_accuracy_drop'] * 100:.2f} pt")
    if constraints.get("max_latency_ms") is not None:
        parts.append(f"max p50 {constraints['max_latency_ms']:g} ms")
    if constraints.get("max_size_kb") is not None:
        parts.append(f"max size {constraints['max_size_kb']:g} KiB")
    if constraints.get("max_ram_kb") is not None:
        parts.append(f"max TFLM arena {constraints['max_ram_kb']:g} KiB")
    if constraints.get("max_flash_kb") is not None:
        parts.append(f"max flash {constraints['max_flash_kb']:g} KiB")
    return ", ".join(parts) or "none"


LEGEND = ("Brackets: 95% intervals on the test split (Wilson for accuracy and agreement; paired "
          "bootstrap of the same samples for Δ); ? marks a gate whose interval straddles its threshold "
          "(inconclusive: the point estimate decided; on a small test split more samples settle it).")


def recommendation_lines(summary: dict) -> list[tuple[str, str, str]]:
    """(label, artifact or verdict, reason): the recommendation, and the board's C arrays
    when the run exported them."""
    target = summary.get("target") or "any"
    where = f"target {target}; constraints: {describe_constraints(summary['constraints'])}"
    chosen = summary.get("recommended") or "none meets the constraints"
    lines = [("Recommended artifact", chosen, f"({where}): {summary.get('why', '')}")]
    board = summary.get("board") or {}
    if summary.get("exported"):
        lines.append(("Exported as C arrays (c_array/)", board.get("artifact") or "nothing",
                      board.get("why") or ""))
    return lines


def _markdown(run_dir: Path, summary, train, manifest, plots) -> str:
    lines = [f"# Pipeline report: {train.get('model')} on {train['data']['name']}", ""]
    accuracy = summary["keras_accuracy"]
    lines.append(f"Keras test accuracy: {accuracy * 100:.2f}%" if accuracy is not None
                 else f"Task: {train.get('task')}; Keras {task_line(train)}")
    lines += [f"{label}: **{name}** {why}" for label, name, why in recommendation_lines(summary)]
    lines += ["", "| " + " | ".join(_columns(summary["rows"])) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in summary["rows"]]
    lines.append("")  # the table ends here: what follows is not one of its rows
    lines += [f"Quantized: {line}" for line in summary.get("quantization", [])]
    lines += [f"Int8 recovery: {describe_recovery(cost)}" for cost in summary["recovery"]]
    lines += [f"Search: {summary['search']} (search/search_report.md)"] if summary.get("search") else []
    lines += [f"Latencies measured on {summary['latency_measured_on']}"] if summary.get("latency_measured_on") else []
    lines += ["", LEGEND,
              "", "Δ is against the unpruned Keras model; speed-up against the base float32 TFLite "
              "model; latency is batch 1, p50 of timed set+invoke+get calls (time.perf_counter_ns). "
              "TFLM arena: the smallest tensor arena TFLite Micro runs the model in, measured; "
              "flash: the model's bytes.", ""]
    lines += [f"![{name}](report/{name})" for name in plots]
    lines += ["", "## Environment", "", "```", *[f"{k}: {v}" for k, v in manifest.get("versions", {}).items()],
              f"platform: {manifest.get('platform')}", "```", "", "## Manifest (sha256)", "", "```",
              *[f"{k}  {v}" for k, v in manifest.get("artifacts", {}).items()], "```", ""]
    return "\n".join(lines)


def _html(run_dir: Path, summary, train, manifest, plots) -> str:
    escape = html.escape
    rows_html = "".join(
        "<tr class='{}'>".format("fail" if not r["passed"] else ("best" if r["recommended"] else ""))
        + "".join(f"<td>{escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in summary["rows"])
    images = "".join(
        f"<figure><img alt='{escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
        f"<figcaption>{escape(name.removesuffix('.png').replace('_', ' '))}</figcaption></figure>"
        for name, data in plots.items())
    versions = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
                       for k, v in manifest.get("versions", {}).items())
    hashes = "".join(f"<tr><td>{escape(k)}</td><td><code>{escape(v)}</code></td></tr>"
                     for k, v in manifest.get("artifacts", {}).items())
    accuracy = summary["keras_accuracy"]
    header = "".join(f"<th>{c}</th>" for c in _columns(summary["rows"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pipeline report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }}
.rows {{ overflow-x: auto; max-width: 100%; }}
.rows td:nth-child(-n+2), .rows th:nth-child(-n+2) {{ position: sticky; background: #fff; z-index: 1; }}
.rows td:nth-child(1), .rows th:nth-child(1) {{ left: 0; min-width: 4.5rem; }}
.rows td:nth-child(2), .rows th:nth-child(2) {{ left: 4.5rem; }}
.rows th {{ background: #f0f0f0; }}
.rows tr.best td {{ background: #e6f6e6; }} .rows tr.fail td {{ background: #fde8e8; }}
td, th {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
th {{ background: #f0f0f0; }} tr.fail {{ background: #fde8e8; }} tr.best {{ background: #e6f6e6; font-weight: 600; }}
figure {{ display: inline-block; margin: 0.5rem; }} img {{ max-width: 640px; }}
.summary {{ font-size: 1.05rem; }}
</style></head><body>
<h1>Pipeline report: {escape(str(train.get('model')))} on {escape(train['data']['name'])}</h1>
<p class="summary">{f'Keras test accuracy: <b>{accuracy * 100:.2f}%</b>' if accuracy is not None
                     else f"Task: {escape(str(train.get('task')))}; Keras {escape(task_line(train))}"}.
Verification: <b>{'passed' if summary['passed'] else 'FAILED'}</b>.</p>
{''.join(f"<p>{escape(label)}: <b>{escape(name)}</b> {escape(why)}</p>"
         for label, name, why in recommendation_lines(summary))}
{''.join(f"<p>Quantized: {escape(line)}</p>" for line in summary.get('quantization', []))}
{''.join(f"<p>Int8 recovery: {escape(describe_recovery(cost))}</p>" for cost in summary['recovery'])}
{f"<p>Search: {escape(summary['search'])}</p>" if summary.get('search') else ''}
{f"<p>Latencies measured on {escape(summary['latency_measured_on'])}</p>" if summary.get('latency_measured_on') else ''}
<div class="rows"><table><thead><tr>{header}</tr></thead><tbody>{rows_html}</tbody></table></div>
<p>{escape(LEGEND)}</p>
<p>Δ: against the unpruned Keras model. Speed-up: against the base float32 TFLite model. Latency: batch 1,
p50/p90 of timed set+invoke+get calls (time.perf_counter_ns) after warm-up. TFLM arena: the smallest tensor
arena TFLite Micro runs the model in, measured; flash: the model's bytes.</p>
{images}
<h2>Environment</h2><table>{versions}<tr><td>platform</td><td>{escape(str(manifest.get('platform')))}</td></tr></table>
<h2>Manifest</h2><table>{hashes}</table>
</body></html>
"""
