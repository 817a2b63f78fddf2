"""One set of conventions for every command: docs/commands.md's table is each command's --help,
every default comes from the config file's, and ``--set`` reaches every config field."""
import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.common import _items
from pipeline.config.schema import Config

COMMANDS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "commands.md"
COMMANDS = typer.main.get_command(app).commands


def _shown_options(command) -> list[str]:
    """What ``--help`` lists: arguments by name, options by their first long name."""
    shown = []
    for param in command.params:
        if getattr(param, "hidden", False) or param.name == "help":
            continue
        if param.param_type_name == "argument":
            shown.append(param.name.upper())
        else:
            shown.append(next(o for o in param.opts if o.startswith("--")))
    return shown


def _documented_table() -> dict[str, list[str]]:
    section = COMMANDS_PAGE.read_text(encoding="utf-8").split("\n## Conventions", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `pipeline (\w+)` \| (.+) \|$", section, flags=re.M)
    return {name: re.findall(r"`([^`]+)`", cells) for name, cells in rows}


def test_documented_conventions_table_matches_every_help():
    table = _documented_table()
    assert list(table) == list(COMMANDS)  # --help lists them in the documented order
    for name, command in COMMANDS.items():
        assert table[name] == _shown_options(command), name
        shown = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
        assert shown.exit_code == 0, shown.output
        help_text = shown.output
        for option in table[name]:
            assert option.lower() in help_text.lower(), (name, option)


def test_every_command_has_quiet_and_verbose_and_run_stages_take_run():
    for name, command in COMMANDS.items():
        options = _shown_options(command)
        assert "--quiet" in options and "--verbose" in options, name
        if name in ("prune", "quantize", "convert", "verify", "bench", "report"):
            assert "--run" in options, name


def _option_default(command: str, option: str):
    param = next(p for p in COMMANDS[command].params if option in p.opts)
    return param.default


def test_command_defaults_are_the_config_defaults():
    from pipeline.config.stages import BenchOptions, ConvertOptions, PruneOptions, QuantizeOptions
    from pipeline.search import SearchOptions

    config = Config()
    pairs = [  # (command, option, Options default, config default)
        ("prune", "--sparsity", PruneOptions().target_sparsity, max(config.prune.sparsity)),
        ("prune", "--structured", PruneOptions().structured, config.prune.structured),
        ("prune", "--fine-tune-epochs", PruneOptions().fine_tune_epochs, config.prune.fine_tune_epochs),
        ("prune", "--learning-rate", PruneOptions().learning_rate, config.prune.learning_rate),
        ("quantize", "--calibration-samples", QuantizeOptions().calibration_samples,
         config.quantize.calibration_samples),
        ("quantize", "--float-io", QuantizeOptions().float_io, config.quantize.float_io),
        ("convert", "--opset", ConvertOptions().opset, config.convert.opset),
        ("convert", "--calibration-samples", ConvertOptions().calibration_samples,
         config.quantize.calibration_samples),
        ("bench", "--runs", BenchOptions().runs, config.bench.runs),
        ("bench", "--warmup", BenchOptions().warmup, config.bench.warmup),
        ("bench", "--min-seconds", BenchOptions().min_seconds, config.bench.min_seconds),
        ("import", "--dataset", config.data.dataset, config.data.dataset),
        ("import", "--seed", config.data.seed, config.data.seed),
        ("search", "--trials", SearchOptions().trials, config.search.trials),
        ("search", "--epochs", SearchOptions().epochs, config.search.epochs),
        ("search", "--bench-seconds", SearchOptions().bench_seconds, config.search.bench_seconds),
        ("search", "--time-limit", SearchOptions().time_limit_s, config.search.time_limit_s),
        ("search", "--device", SearchOptions().device, config.search.device),
        ("search", "--max-latency-ms", SearchOptions().max_latency_ms, config.constraints.max_latency_ms),
    ]
    for command, option, options_default, config_default in pairs:
        assert _option_default(command, option) == options_default == config_default, (command, option)
    assert QuantizeOptions().modes == config.quantize.modes
    assert ConvertOptions().targets == config.convert.targets
    assert BenchOptions().threads == config.bench.threads

    from edge_runtime.cli import _parser

    assert _parser().parse_args(["bench", "m.tflite"]).min_seconds == config.bench.min_seconds


def test_a_command_without_flags_does_what_the_config_does(trained_run, tmp_path):
    """`pipeline quantize` with no mode writes the config's modes, not a private choice."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, symlinks=True,
                    ignore=shutil.ignore_patterns("model_*.tflite*", "quantize.json"))  # other tests' output
    result = CliRunner().invoke(app, ["quantize", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in run_dir.glob("model_*.tflite"))
    expected = sorted(f"model_{mode}.tflite" for mode in Config().quantize.modes)
    assert written == expected


@pytest.mark.parametrize("values, keyed, expected", [
    (["tflite,onnx"], False, ["tflite", "onnx"]),
    (["tflite", "onnx"], False, ["tflite", "onnx"]),
    (["1,2", "4"], False, ["1", "2", "4"]),
    ([" a , ,b "], False, ["a", "b"]),
    (["quantize.modes=int8,float16"], True, ["quantize.modes=int8,float16"]),
    (["train.epochs=5,data.seed=3"], True, ["train.epochs=5", "data.seed=3"]),
    (["-i=/k,ey", "UserKnownHostsFile=/x"], True, ["-i=/k,ey", "UserKnownHostsFile=/x"]),
    (None, False, []),
])
def test_list_options_repeat_or_take_commas(values, keyed, expected):
    assert _items(values, "--option", keyed=keyed) == expected


def test_a_list_option_given_empty_is_an_error():
    from pipeline.core.errors import UsageError

    with pytest.raises(UsageError, match="--threads was given without a value"):
        _items(["", " , "], "--threads")
