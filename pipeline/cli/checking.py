"""``pipeline verify``: every artifact's parity with Keras, printed as a table."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipeline.cli.common import DEFAULTS, QuietOption, RunOption, UnsafeOption, VerboseOption, _items, _listed, command


@command()
def verify(
    run: RunOption = None,
    artifact: Annotated[Optional[list[str]], _listed(
        "Artifacts to verify (names in the run, or paths).", "every artifact in the run")] = None,
    gate: Annotated[Optional[list[str]], _listed(
        "Override a gate: KIND.METRIC=VALUE, e.g. quantized.metric_drop=0.02.")] = None,
    explain: Annotated[bool, typer.Option(help="Name the layers that lose most to quantization.")] = False,
    strict: Annotated[bool, typer.Option(
        help="Fail (exit 6) on an inconclusive gate too: one whose 95% interval straddles its "
             "threshold, so the test split is too small to tell.")] = False,
    ram_kb: Annotated[Optional[float], typer.Option(
        help="Microcontroller RAM budget: fail an integer TFLite artifact whose TFLite Micro "
             "tensor arena (measured) is larger (default: the config's constraints.max_ram_kb, "
             "unset).")] = DEFAULTS.constraints.max_ram_kb,
    flash_kb: Annotated[Optional[float], typer.Option(
        help="Microcontroller flash budget for the model's bytes (default: the config's "
             "constraints.max_flash_kb, unset).")] = DEFAULTS.constraints.max_flash_kb,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Accuracy parity of every artifact against Keras on the test split; failing gates exit 6."""
    from pipeline.checking.verify import verify as run_verify
    from pipeline.config.gates import VerifyOptions, parse_gate
    from pipeline.core.errors import ParityError
    from pipeline.core.fsutil import read_json
    from pipeline.core.rundir import resolve_run

    overrides: dict[str, dict[str, float]] = {}
    for text in _items(gate, "--gate", keyed=True):
        kind, metric, value = parse_gate(text)
        overrides.setdefault(kind, {})[metric] = value
    options = VerifyOptions(artifacts=_items(artifact, "--artifact") or None, gates=overrides,
                            explain=explain, strict=strict, max_ram_kb=ram_kb, max_flash_kb=flash_kb)
    try:
        report = run_verify(run, options)
    except ParityError:
        report = read_json(resolve_run(run) / "verify.json")
        _print_verify_table(report)
        _warn_inconclusive(report, strict)
        raise
    _print_verify_table(report)
    _warn_inconclusive(report, strict)


def _warn_inconclusive(report: dict, strict: bool) -> None:
    found = report.get("inconclusive") or []
    if found and not strict:
        typer.echo(f"warning: {len(found)} gate(s) inconclusive on {report['test_samples']} test samples "
                   f"(the point estimate decided; --strict fails them): {'; '.join(found)}", err=True)


def _describe_micro(micro: dict) -> str:
    """One line for a microcontroller check: TFLM's answers and memory, or why it did not run."""
    if "skipped" in micro or "error" in micro:
        return f"TFLite Micro: {micro.get('skipped') or micro['error']}"
    parts = []
    if micro["accuracy"] is not None:
        parts.append(f"accuracy {micro['accuracy']:.2%}, top-1 agreement {micro['top1_agreement']:.2%} "
                     f"with LiteRT's reference kernels ({micro['top1_agreement_xnnpack']:.2%} with XNNPACK)")
    if micro.get("decision_agreement") is not None:
        parts.append(f"anomaly decisions agree {micro['decision_agreement']:.2%} with LiteRT's reference kernels, "
                     f"scores within {micro['score_max_relative_difference']:.2%}")
    if micro.get("mae") is not None:
        parts.append(f"MAE {micro['mae']:.4g} (LiteRT's reference kernels {micro['reference_mae']:.4g})")
    parts.append(f"largest output difference {micro['max_output_difference']:g} "
                 f"{micro['output_difference_unit']}")
    parts.append(f"arena {micro['arena_bytes']:,} B, flash {micro['flash_bytes']:,} B")
    return "TFLite Micro: " + "; ".join(parts)


def _interval(ci95, negate: bool = False) -> str:
    if not ci95:
        return "-"
    low, high = (0.0 - ci95[1], 0.0 - ci95[0]) if negate else ci95
    return f"[{low:+.4f}, {high:+.4f}]" if negate else f"[{low:.4f}, {high:.4f}]"


def _print_verify_table(report: dict) -> None:
    metric = report["metric"]
    typer.echo(f"{'artifact':28s} {'mode':8s} {metric:>10s} {'95% interval':>15s} {'Δ':>8s} {'95% interval':>17s} "
               f"{'agree':>7s} {'95% interval':>15s} {'max err':>9s} {'SQNR dB':>8s}  gates (? inconclusive)")
    for row in report["artifacts"]:
        agreed = "top1_agreement" if row.get("top1_agreement") is not None else "decision_agreement"
        agreement = "-" if row.get(agreed) is None else f"{row[agreed]:.2%}"
        gates = " ".join(f"{'?' if g.get('verdict') == 'inconclusive' else '✓' if g['passed'] else '✗'}{name}"
                         for name, g in row["gates"].items())
        typer.echo(f"{row['artifact']:28s} {row['mode']:8s} {row['metric_value']:10.4f} "
                   f"{_interval(row.get('accuracy_ci95') or row.get('metric_ci95')):>15s} "
                   f"{0.0 - row['metric_drop']:+8.4f} "
                   f"{_interval(row.get('metric_drop_ci95'), negate=True):>17s} {agreement:>7s} "
                   f"{_interval(row.get(f'{agreed}_ci95')):>15s} {row['max_abs_error']:9.2e} "
                   f"{row['sqnr_db']:8.1f}  {gates}")
        for layer in (row.get("explain") or {}).get("worst_layers", []):
            measure = ", ".join(f"{k} {v:.3g}" for k, v in layer.items()
                                 if k in ("rmse_over_scale", "sqnr_db") and v is not None)
            typer.echo(f"    worst layer {layer['layer']} ({measure})")
        for hint in (row.get("explain") or {}).get("hints", []):
            typer.echo(f"    hint: {hint}")
        if row.get("micro"):
            typer.echo(f"    {_describe_micro(row['micro'])}")
    for source, keras in report.get("keras", {}).items():
        if isinstance(keras, dict):  # a task beyond classification: its metric with its interval
            typer.echo(f"Keras {source}: {keras['metric']} {keras['value']:.4f} {_interval(keras.get('ci95'))}"
                       + (f", partial AUC (FPR <= {keras['partial_auc_max_fpr']:g}) {keras['partial_auc']:.4f}"
                          if "partial_auc" in keras else "")
                       + (f", RMSE {keras['rmse']:.4g}" if "rmse" in keras else ""))
    for pair in report.get("cross_runtime", []):
        typer.echo(f"{pair['tflite']} vs {pair['onnx']}: top-1 agreement {pair['top1_agreement']:.2%}, "
                   f"max diff {pair['max_abs_difference']:.2e}")
    typer.echo("verify: " + ("passed" if report["passed"] else "FAILED"))
