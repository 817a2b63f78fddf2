"""``pipeline run``: every stage from one config, cached and resumable, then the report.

Each stage's inputs (its config section, the hashes of the artifacts it reads, the code
version) are hashed; a stage whose inputs and outputs are unchanged is skipped. Progress is
recorded in ``pipeline_state.json`` after every stage (atomically, ``stage_cache``), so a
run killed at any point resumes from the last finished stage. Sweeps: every ``prune.sparsity`` value is a
variant (``variants/pruned-NN/``), each quantized to every mode.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.schema import Config
from pipeline.core import rundir
from pipeline.core.errors import CollapseError, ConstraintError, ParityError, UsageError
from pipeline.core.fsutil import copy_file, make_dirs, read_json, sha256_file, write_json
from pipeline.formats.kinds import MODEL, PRUNED_MODEL, QAT_INT8, artifact_file, quant_mode, source_model
from pipeline.running.stage_cache import (
    STATE,
    Progress,
    StageRecord,
    Stages,
    data_fingerprint,
    file_fingerprint,
    hashes,
)

log = logging.getLogger("pipeline")
STAGES = ("search", "train", "prune", "quantize", "convert", "verify", "bench", "report", "export")


@dataclass
class RunResult:
    run_dir: Path
    report: Path
    passed: bool
    recommended: str | None
    stages: list[StageRecord] = field(default_factory=list)


def default_out(config: Config) -> Path:
    return (rundir.DEFAULT_RUNS_ROOT
            / f"pipeline-{Path(config.train.model).stem}-{rundir.safe_name(config.data.dataset)}")


def check_search(config: Config) -> None:
    """The search section, checked before anything runs (its space is the search's to say, so
    the config loader below the stages cannot)."""
    if config.search.enabled:
        from pipeline.config.schema import ConfigError
        from pipeline.search import options_from_config

        try:
            options_from_config(config).validate()
        except UsageError as exc:
            raise ConfigError(f"search: {exc}") from None


def run(config: Config, *, out: str | Path | None = None, force: list[str] = (),
        progress: Progress | None = None) -> RunResult:
    """Train → prune → quantize → convert → verify → bench → report, cached per stage."""
    unknown = [s for s in force if s not in STAGES]
    if unknown:
        from pipeline.core.errors import unknown_name

        raise unknown_name("stage", unknown[0], STAGES)
    check_search(config)
    run_dir = rundir.new_run_dir(config.train.model, config.data.dataset, out or default_out(config))
    with rundir.locked(run_dir):  # for the whole command; the stages' own locking is reentrant
        write_json(run_dir / "config.json", config.to_dict())  # the resolved config
        return _run_locked(config, run_dir, Stages(run_dir, set(force), progress))


def _run_locked(config: Config, run_dir: Path, stages: Stages) -> RunResult:
    if config.search.enabled:
        _search(config, run_dir, stages)
    else:
        _train(config, run_dir, stages)
    rundir.point_latest(run_dir)
    variants = _variants(config, run_dir, stages)
    failures = []
    for stage in ("quantize", "convert", "verify", "bench"):
        for variant, pruned in variants:
            failure = _STAGE_FUNCTIONS[stage](config, run_dir, variant, pruned, stages)
            if failure:
                failures.append(failure)
        stages.finish(stage)
    report_inputs = {"config": config.to_dict(), "variants": [
        hashes(sorted(p for p in v.glob("*.json") if p.name not in (STATE, "report.json")))
        for v, _ in variants]}
    from pipeline.running.report import build_report

    summary: dict[str, Any] = {}

    def make_report() -> list[Path]:
        summary.update(build_report(run_dir))
        return [run_dir / "report.md", run_dir / "report.html", run_dir / "report.json"]

    stages.run("report", "report", report_inputs, make_report)
    stages.finish("report")
    if not summary:
        summary.update(read_json(run_dir / "report.json"))
    if config.export.c_array:
        _export_c_array(config, run_dir, summary, stages)
    result = RunResult(run_dir, run_dir / "report.html", not failures,
                       summary.get("recommended"), list(stages.records.values()))
    if failures:
        raise ParityError(f"{'; '.join(failures)} — report: {run_dir / 'report.html'}")
    if not result.recommended:
        raise ConstraintError(f"no artifact meets target {summary.get('target') or 'any'} and the constraints "
                              f"— {summary.get('why')} (report: {run_dir / 'report.html'})")
    return result


def stage_options(config: Config, stage: str, **per_command):
    """The settings ``pipeline run`` hands a stage: its section of the config, completed with
    what the run decides per variant (``per_command``). Calibration and recovery are the
    quantize section's for every artifact made from the model (the int8 ONNX too), and the
    verify gates are what int8 recovery aims at."""
    section = getattr(config, stage)
    shared = {
        "quantize": {"gates": config.verify.gates},
        "convert": {"calibration_samples": config.quantize.calibration_samples,
                    "calibration_data": config.quantize.calibration_data,
                    "recover": config.quantize.recover, "integer_only": config.quantize.integer_only,
                    "gates": config.verify.gates},
    }.get(stage, {})
    return dataclasses.replace(section, **shared, **per_command)


def _export_c_array(config: Config, run_dir: Path, summary: dict, stages: Stages) -> None:
    """C source of the artifact a board would take: the recommendation when TFLite Micro runs it,
    else the best artifact for target mcu under the same constraints (the report says which)."""
    from pipeline.device.export import export

    board = summary.get("board") or {}
    if not board.get("artifact"):
        raise ConstraintError(f"export.c_array: no artifact TFLite Micro runs meets the constraints — "
                              f"{board.get('why')} (report: {run_dir / 'report.html'})")
    chosen = run_dir / board["artifact"]
    out_dir = run_dir / "c_array"

    def work() -> list[Path]:
        export(run_dir, stage_options(config, "export", artifact=str(chosen), out_dir=str(out_dir)))
        return [out_dir / "model_data.h", out_dir / "model_data.cc", out_dir / "model_data.json"]

    stages.run("export", "export", {"model": sha256_file(chosen), "export": config.section("export")}, work)
    stages.finish("export")


def _train(config: Config, run_dir: Path, stages: Stages) -> None:
    from pipeline.config.stages import TrainOptions
    from pipeline.training.train import train

    train_fields = config.section("train")
    allow_collapse = train_fields.pop("allow_collapse")
    inputs = {"data": config.section("data"), "train": train_fields,
              "data_files": data_fingerprint(config.data.dataset)}

    def work() -> list[Path]:
        from pipeline.core.modelio import model_code_trusted

        train_config = TrainOptions(**train_fields, **config.section("data"), unsafe=model_code_trusted())
        if (train_config.backend or "tensorflow") == "tensorflow":
            train(run_dir, train_config, verbose=0)
        else:  # Keras' backend is fixed per process: train there, convert here under TensorFlow
            _train_in_child(train_config, run_dir)
        return [run_dir / MODEL, run_dir / "train.json"]

    stages.run("train", "train", inputs, work)
    stages.finish("train")
    check = read_json(run_dir / "train.json").get("collapse_check") or {}
    if check.get("collapsed") and not allow_collapse:
        raise CollapseError(f"{check['reason']} — stopping before optimizing it; "
                            f"pass --set train.allow_collapse=true to go on anyway")


def _search(config: Config, run_dir: Path, stages: Stages) -> None:
    """The search's winner, retrained, is the run's model (in place of train.model as it comes)."""
    from pipeline.core.errors import PipelineError
    from pipeline.search import options_from_config, resumes, search

    options = options_from_config(config)
    out = run_dir / "search"
    budgets = {k: v for k, v in config.section("constraints").items() if k in ("max_latency_ms", "max_size_kb",
                                                                              "max_ram_kb")}
    inputs = {"data": config.section("data"), "model": config.train.model, "search": config.section("search"),
              "budgets": budgets, "data_files": data_fingerprint(config.data.dataset)}

    def work() -> list[Path]:
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise PipelineError(f"{out} is not a directory this run made: remove it, or choose a new --out")
        if out.exists() and not resumes(out, options):  # a search with other settings: start afresh
            shutil.rmtree(out)
        summary = search(options, out)
        if not summary.get("best"):
            raise PipelineError(f"search: no trial fits the budgets ({out / 'search_report.md'}): raise "
                                f"constraints.max_latency_ms / max_size_kb / max_ram_kb or widen search.space")
        for name in (MODEL, "train.json"):
            copy_file(Path(summary["best"]["run_dir"]) / name, run_dir / name)
        return [run_dir / MODEL, run_dir / "train.json", out / "search.json"]

    stages.run("search", "search", inputs, work)
    stages.finish("search")


def _train_in_child(train_config, run_dir: Path) -> None:
    import dataclasses

    from pipeline.core.backend import run_under_backend

    run_under_backend(train_config.backend, "pipeline.training.train",
                      [json.dumps(dataclasses.asdict(train_config)), str(run_dir)], run_dir, "training")


def _variants(config: Config, run_dir: Path, stages: Stages) -> list[tuple[Path, bool]]:
    from pipeline.optimizing.prune import prune

    variants: list[tuple[Path, bool]] = []
    for sparsity in config.prune.sparsity:
        if sparsity == 0:
            variants.append((run_dir, False))
            continue
        variant = run_dir / "variants" / f"pruned-{round(sparsity * 100):02d}"
        options = stage_options(config, "prune", sparsity=[sparsity])
        inputs = {"prune": {**config.section("prune"), "sparsity": sparsity},
                  "model": sha256_file(run_dir / MODEL)}

        def work(variant=variant, options=options) -> list[Path]:
            make_dirs(variant)
            for name in (MODEL, "train.json"):
                copy_file(run_dir / name, variant / name)
            prune(variant, options)
            return [variant / PRUNED_MODEL, variant / "prune.json"]

        stages.run("prune", f"prune@{variant.name}", inputs, work)
        variants.append((variant, True))
    stages.finish("prune")
    return variants


def _label(run_dir: Path, variant: Path) -> str:
    """State key of a variant: independent of where the run directory lives."""
    return "base" if variant == run_dir else variant.name


def _source(variant: Path, pruned: bool) -> Path:
    return variant / source_model(pruned)


def _quantize(config: Config, run_dir: Path, variant: Path, pruned: bool, stages: Stages):
    from pipeline.optimizing.quantize import quantize

    options = stage_options(config, "quantize", pruned=pruned)
    inputs = {"quantize": config.section("quantize"), "model": sha256_file(_source(variant, pruned)),
              "calibration_file": file_fingerprint(config.quantize.calibration_data),
              "gates": config.verify.gates}  # int8 recovery aims at the verify gates

    def work() -> list[Path]:
        report = quantize(variant, options)
        made = {quant_mode(m).file(pruned) for m in config.quantize.modes}
        recovered = (report.get("recovery") or {}).get("artifact")  # a mix, or QAT for an integer-only target
        made.add(recovered)
        qat = report.get("qat") if config.quantize.qat or recovered == QAT_INT8.file(pruned) else None
        if qat:
            made.add(qat["artifact"])
        artifacts = [variant / name for name in report["artifacts"] if name in made]
        fake_quant = [variant / qat["fake_quant_model"]] if qat else []
        return [*artifacts, *(a.with_name(a.name + ".json") for a in artifacts), *fake_quant,
                variant / "quantize.json"]

    stages.run("quantize", f"quantize@{_label(run_dir, variant)}", inputs, work)
    return None


def _convert(config: Config, run_dir: Path, variant: Path, pruned: bool, stages: Stages):
    from pipeline.optimizing.convert import convert

    options = stage_options(config, "convert", pruned=pruned)
    int8 = variant / artifact_file("int8.tflite", pruned)
    inputs = {"convert": config.section("convert"), "model": sha256_file(_source(variant, pruned)),
              "calibration": [config.quantize.calibration_samples,
                              file_fingerprint(config.quantize.calibration_data)],
              "int8": sha256_file(int8) if int8.exists() else None,
              "recover": config.quantize.recover, "integer_only": config.quantize.integer_only,
              "gates": config.verify.gates}  # the int8 ONNX's recovery

    def work() -> list[Path]:
        report = convert(variant, options)
        return [variant / name for name in report["artifacts"]] + [variant / "convert.json"]

    stages.run("convert", f"convert@{_label(run_dir, variant)}", inputs, work)
    return None


def _artifacthashes(variant: Path) -> dict[str, str]:
    from pipeline.formats.kinds import run_artifacts

    return hashes(run_artifacts(variant))


def _verify(config: Config, run_dir: Path, variant: Path, pruned: bool, stages: Stages):
    from pipeline.checking.verify import verify

    inputs = {"verify": config.section("verify"), "artifacts": _artifacthashes(variant)}

    def work() -> list[Path]:
        try:
            verify(variant, stage_options(config, "verify"))
        except ParityError:
            pass  # recorded in verify.json; the run reports it and exits non-zero at the end
        return [variant / "verify.json"]

    stages.run("verify", f"verify@{_label(run_dir, variant)}", inputs, work)
    report = read_json(variant / "verify.json")
    if not report["passed"]:
        failed = [a["artifact"] for a in report["artifacts"] if not a["passed"]]
        return f"{variant.name}: {', '.join(failed)} failed verification"
    return None


def _bench(config: Config, run_dir: Path, variant: Path, pruned: bool, stages: Stages):
    from pipeline.device.bench import bench

    inputs = {"bench": config.section("bench"), "artifacts": _artifacthashes(variant)}

    def work() -> list[Path]:
        outputs = []
        for index, device in enumerate([None, *config.bench.devices]):
            name = "bench.json" if device is None else f"bench_device{index}.json"
            bench(variant, stage_options(config, "bench", device=device, output=name))
            outputs.append(variant / name)
        return outputs

    stages.run("bench", f"bench@{_label(run_dir, variant)}", inputs, work)
    return None


_STAGE_FUNCTIONS = {"quantize": _quantize, "convert": _convert, "verify": _verify, "bench": _bench}
