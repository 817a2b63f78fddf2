"""pipeline run: config validation, the whole pipeline, caching, --force, kill and resume,
the report (rendered in headless Chromium)."""
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import load_config
from pipeline.cli import app
from pipeline.config.schema import ConfigError

SMALL = ["train.model=mlp", "train.epochs=2", "prune.sparsity=[0, 0.5]", 'quantize.modes=["int8", "float16"]',
         "bench.runs=20", "bench.min_seconds=0", "export.c_array=true"]


def test_config_defaults_file_and_overrides(tmp_path):
    config = load_config()
    assert config.train.model == "mnist_cnn" and config.prune.sparsity == [0.0, 0.5]
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nepochs = 3\n[prune]\nsparsity = 0.8\n[quantize]\nmodes = ["int8"]\n')
    config = load_config(toml, ["train.optimizer=adam", "bench.threads=[1, 2]"])
    assert (config.train.epochs, config.prune.sparsity, config.train.optimizer) == (3, [0.8], "adam")
    assert config.bench.threads == [1, 2]
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("data:\n  dataset: digits\nconstraints:\n  max_latency_ms: 2\n")
    assert load_config(yaml_file).constraints.max_latency_ms == 2.0


@pytest.mark.parametrize("text, overrides, message", [
    ("[train]\nepochz = 3\n", [], "train.epochz: unknown field (did you mean 'epochs'?)"),
    ("[train]\nepochs = 'ten'\n", [], "train.epochs: expected an integer, got 'ten'"),
    ("[prune]\nsparsity = [0.5, 'lots']\n", [], "prune.sparsity[1]: expected a number, got 'lots'"),
    ("[quantize]\nmodes = ['int2']\n", [], "quantize.modes[0]: unknown value 'int2' (did you mean 'int8'?)"),
    ("", ["trian.epochs=3"], "--set trian.epochs: unknown section (did you mean 'train'?)"),
    ("", ["train.epochs"], "--set takes SECTION.FIELD=VALUE"),
    ("[train\n", [], "is not valid TOML"),
])
def test_config_errors_name_the_field(tmp_path, text, overrides, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    assert message in str(caught.value)


def _artifact_hashes(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.suffix in (".tflite", ".onnx")}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from pipeline import run

    out = tmp_path_factory.mktemp("pipeline") / "run"
    started = time.perf_counter()
    result = run(load_config(overrides=SMALL), out=out)
    return result, time.perf_counter() - started


def test_whole_pipeline_with_sweep_and_report(small_run):
    result, _ = small_run
    run_dir = result.run_dir
    assert result.passed and result.report == run_dir / "report.html"
    report = json.loads((run_dir / "report.json").read_text())
    variants = {row["variant"] for row in report["rows"]}
    assert variants == {"base", "pruned-50"}  # 2 sparsities x 2 modes
    modes = {(row["variant"], row["mode"]) for row in report["rows"]}
    assert {("base", "int8"), ("base", "float16"), ("pruned-50", "int8"), ("pruned-50", "float16")} <= modes
    assert any(row["pareto"] for row in report["rows"])
    assert report["recommended"] == result.recommended and result.recommended
    for row in report["rows"]:
        assert row["p50_ms"] > 0 and row["size_kb"] > 0
    markdown = (run_dir / "report.md").read_text()
    assert "| Variant | Format | Status | Size | Accuracy | Δ | Agreement | p50 ms | p90 ms | Speed-up |" in markdown
    assert "★ recommended" in markdown
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # scatter, sizes, curves, confusion matrix
    assert json.loads((run_dir / "config.json").read_text())["train"]["model"] == "mlp"
    # The microcontroller view: every int8 TFLite row carries its measured arena and flash,
    # and the C array of the exported model holds exactly its bytes.
    from pipeline.formats.micro import unavailable

    if unavailable() is None:
        int8_rows = [r for r in report["rows"] if r["mode"] == "int8" and r["format"] == "tflite"]
        # flash: the model without the metadata a phone reads (what the C array embeds)
        assert int8_rows and all(r["arena_kb"] > 0 and 0 < r["size_kb"] - r["flash_kb"] < 4 for r in int8_rows)
        assert any(line.startswith("| base | model_int8.tflite") and line.split("|")[-4].strip().endswith(" KiB")
                   for line in markdown.splitlines())
        facts = json.loads((run_dir / "c_array" / "model_data.json").read_text())
        chosen = run_dir / report["recommended"]  # the recommended model, if a board can take it
        if not chosen.name.endswith(("_int8.tflite", "_int16x8.tflite")):
            chosen = run_dir / "model_int8.tflite"
        assert facts["artifact"] == chosen.name
        assert facts["length"] + facts["metadata_bytes_left_out"] == chosen.stat().st_size
        assert facts["arena_bytes"] > 0


def test_second_run_is_cached_and_force_reruns_one_stage(small_run):
    from pipeline import run

    result, _ = small_run
    before = _artifact_hashes(result.run_dir)
    again = run(load_config(overrides=SMALL), out=result.run_dir)
    assert all(stage.status == "cached" for stage in again.stages)  # nothing ran again
    forced = run(load_config(overrides=SMALL), out=result.run_dir, force=["quantize"])
    statuses = {stage.name: stage.status for stage in forced.stages}
    assert statuses["quantize"] == "ran" and statuses["train"] == "cached"
    assert _artifact_hashes(result.run_dir) == before  # deterministic: same bytes again


def test_changed_config_reruns_from_the_changed_stage(small_run, tmp_path):
    from pipeline import run

    result, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(result.run_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
    changed = run(load_config(overrides=[*SMALL, "bench.runs=25"]), out=copy)
    statuses = {stage.name: stage.status for stage in changed.stages}
    assert statuses["bench"] == "ran" and statuses["verify"] == "cached" and statuses["train"] == "cached"


def test_cli_run_reports_where_the_report_is(small_run, tmp_path, monkeypatch):
    result, _ = small_run
    runner = CliRunner()
    sets = [item for s in SMALL for item in ("--set", s)]
    outcome = runner.invoke(app, ["run", *sets, "--out", str(result.run_dir)])
    assert outcome.exit_code == 0, outcome.output
    assert f"report: {result.run_dir / 'report.html'}" in outcome.output
    rebuilt = runner.invoke(app, ["report", "--run", str(result.run_dir)])
    assert rebuilt.exit_code == 0 and "recommended:" in rebuilt.output
    bad = runner.invoke(app, ["run", "--set", "train.epochs=0"])
    assert bad.exit_code == 2 and "train.epochs: must lie in [1, 100000], got 0" in bad.stderr


def test_failing_gate_fails_the_run_after_writing_the_report(small_run, tmp_path):
    from pipeline import run
    from pipeline.core.errors import ParityError

    result, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(result.run_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
    with pytest.raises(ParityError, match="failed verification"):
        run(load_config(overrides=[*SMALL, 'verify.gates={"float16": {"max_abs_error": 1e-12}}']), out=copy)
    report = json.loads((copy / "report.json").read_text())
    assert report["passed"] is False
    assert "✗ max_abs_error" in (copy / "report.md").read_text()


def test_report_renders_in_headless_chromium(small_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (CI installs Debian's chromium)")
    result, _ = small_run
    screenshot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
                    f"--screenshot={screenshot}", (result.run_dir / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2000)
    from PIL import Image

    pixels = Image.open(screenshot).convert("L")
    assert len(set(pixels.getdata())) > 50  # text, table and plots drawn, not a blank page


def test_bench_defaults_agree_everywhere():
    """`pipeline bench`, the config's bench section and `edge-runtime bench` time alike."""
    import inspect

    from edge_runtime.bench import DEFAULT_MIN_SECONDS
    from edge_runtime.cli import _parser
    from pipeline.cli.device import bench
    from pipeline.config.stages import BenchOptions

    cli_default = inspect.signature(bench).parameters["min_seconds"].default
    edge_default = _parser().parse_args(["bench", "model.tflite"]).min_seconds
    assert cli_default == edge_default == BenchOptions().min_seconds == DEFAULT_MIN_SECONDS


def _plot_rows(latencies, accuracies):
    return [{"variant": "base", "artifact": f"model_artifact_number_{i}.tflite", "metric": "accuracy",
             "value": a, "p50_ms": p, "size_kb": 100.0, "pareto": i % 2 == 0, "recommended": i == 0}
            for i, (p, a) in enumerate(zip(latencies, accuracies))]


def test_plot_labels_never_overlap_and_the_recommended_one_is_always_shown():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.device.figures import accuracy_latency_figure

    # A crowded cluster, as a run with int8 TFLite, int8 ONNX and QDQ ONNX at ~0.1 ms gives.
    rows = _plot_rows([0.10, 0.101, 0.102, 0.104, 0.11, 0.12, 0.5, 0.52], [0.97, 0.969, 0.97, 0.968,
                                                                         0.971, 0.97, 0.972, 0.972])
    figure = accuracy_latency_figure(plt, rows)
    renderer = figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in figure.axes[0].texts]
    assert boxes and figure.axes[0].texts[0].get_text() == "base/artifact_number_0.tflite"
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close("all")


def test_latency_axis_is_logarithmic_when_the_spread_is_wide():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.device.figures import LOG_AXIS_SPREAD, accuracy_latency_figure

    narrow = accuracy_latency_figure(plt, _plot_rows([1.0, LOG_AXIS_SPREAD * 0.9], [0.9, 0.95]))
    wide = accuracy_latency_figure(plt, _plot_rows([1.0, LOG_AXIS_SPREAD * 1.1], [0.9, 0.95]))
    assert narrow.axes[0].get_xscale() == "linear" and wide.axes[0].get_xscale() == "log"
    plt.close("all")


def test_the_stage_cache_hashes_every_module_of_the_project():
    """A code change invalidates cached stages only if the hash covers the code: every module of
    pipeline (its sub-packages too), models and edge_runtime."""
    from pipeline.running.stage_cache import PROJECT_ROOT, source_files

    hashed = {path.relative_to(PROJECT_ROOT).as_posix() for path in source_files()}
    expected = {path.relative_to(PROJECT_ROOT).as_posix() for package in ("pipeline", "models", "edge_runtime")
                for path in (PROJECT_ROOT / package).rglob("*.py")}
    assert hashed == expected
    assert {"pipeline/running/stage_cache.py", "pipeline/optimizing/quantize.py", "models/registry.py",
            "edge_runtime/runner.py"} <= hashed


def test_a_microcontroller_run_recommends_and_exports_an_integer_model_or_exits_naming_each_reason(
        small_run, tmp_path):
    result, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(result.run_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
    sets = [item for s in [*SMALL, "export.c_array=true"] for item in ("--set", s)]
    mcu = CliRunner().invoke(app, ["run", *sets, "--target", "mcu", "--out", str(copy)])
    assert mcu.exit_code == 0, mcu.output
    report = json.loads((copy / "report.json").read_text())
    chosen = next(r for r in report["rows"] if r["recommended"])
    assert chosen["format"] == "tflite" and chosen["mode"] == "int8" and chosen["arena_kb"] > 0
    assert report["board"]["artifact"] == report["recommended"]
    assert json.loads((copy / "c_array" / "model_data.json").read_text())["artifact"] == chosen["artifact"]
    assert f"exported: {report['recommended']}" in mcu.output
    assert "Exported as C arrays (c_array/): **" in (copy / "report.md").read_text()
    tight = CliRunner().invoke(app, ["run", *sets, "--set", "constraints.max_ram_kb=0.5", "--target", "mcu",
                                     "--out", str(copy)])
    assert tight.exit_code == 11, tight.output
    line = tight.stderr.strip().splitlines()[-1]
    assert line.startswith("error: export.c_array: no artifact TFLite Micro runs meets the constraints — ")
    assert "./model_int8.tflite: TFLM arena" in line and "KiB > 0.5 KiB" in line
