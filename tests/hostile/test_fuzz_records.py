"""Hostile conditions: A seeded fuzz of the files read back: mutated sidecars, states and
measurements end in one error line or a right answer, never a traceback or a wrong number. Each
case asserts what a user sees (one ``error:`` line and a documented exit code, or the right
result) and what a user cares about (their files unchanged)."""
import json
import subprocess

import numpy as np

from tests.hostile.helpers import PIPELINE, PROJECT

_HOSTILE_VALUES = [None, True, -1, 0, 1e308, float("nan"), "", "x" * 300, [], [None], {}, {"a": [1]}, [[[]]],
                   "../../etc/passwd", -(2 ** 63), [1.5, "two"], {"scale": "1/255"}]


# Sidecar fields that record how an artifact was made; the device never reads them
PROVENANCE = ("options", "versions", "pipeline_version", "source_model", "calibration")


def _mutations(document, rng, count):
    """``count`` copies of a JSON document, each with one field (at any depth) replaced."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node[:3]):
                walk(value, (*path, index))

    walk(document, ())
    for _ in range(count):
        mutated = json.loads(json.dumps(document))
        path = paths[rng.integers(1, len(paths))]
        node = mutated
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = _HOSTILE_VALUES[rng.integers(len(_HOSTILE_VALUES))]
        yield ".".join(map(str, path)), mutated


def test_sixty_mutated_sidecars_are_one_line_or_a_right_answer(int8_copy, digits, tmp_path, capsys):
    """Every field of a sidecar, at any depth, replaced by a hostile value: `edge-runtime
    predict --raw` (which reads the preprocessing and the quantization) either answers as
    with the original sidecar or prints one error line with exit 3 or 4; never a traceback."""
    from edge_runtime.cli import main

    model = int8_copy / "model_int8.tflite"
    sidecar_path = int8_copy / "model_int8.tflite.json"
    original = json.loads(sidecar_path.read_text())
    sample = tmp_path / "x.npy"
    np.save(sample, digits.x_test[:2])
    assert main(["predict", str(model), str(sample), "--raw", "--json"]) == 0
    expected = capsys.readouterr().out
    outcomes = {}
    for field, mutated in _mutations(original, np.random.default_rng(21), 60):
        sidecar_path.write_text(json.dumps(mutated, allow_nan=True))
        code = main(["predict", str(model), str(sample), "--raw", "--json"])
        captured = capsys.readouterr()
        if code == 0:
            assert captured.err == "", (field, captured.err)
        else:
            one_line = captured.err.startswith("error: ") and captured.err.count("\n") == 1
            assert code in (3, 4) and one_line, (field, captured)
        outcomes[field] = code if code else ("same" if captured.out == expected else "different")
    # a changed answer is acceptable only where the field says how to read the model
    changed = {f for f, o in outcomes.items() if o == "different"}
    assert all(f.startswith(("preprocessing", "inputs", "outputs", "class_names")) for f in changed), changed
    # most mutations of what the device reads are refused (provenance fields are not read)
    read = [o for f, o in outcomes.items() if not f.startswith(PROVENANCE)]
    assert sum(o in (3, 4) for o in read) >= 0.5 * len(read), outcomes


def test_forty_mutated_states_and_measurements_are_ignored_or_used_whole(tmp_path):
    """pipeline_state.json and a search trial's measurement.json, mutated: each is either
    taken as a whole (well formed) or ignored (its stage or trial runs again); never a crash."""
    from pipeline.running.stage_cache import valid_stages
    from pipeline.search.trials import _finished_measurement

    state = {"stages": {"train": {"inputs": "ab" * 32, "outputs": {"model.keras": "cd" * 32}, "finished": 1.0}}}
    values = {"hidden": "32", "learning_rate": 0.001, "optimizer": "adam", "batch_size": 32,
              "sparsity": 0.0, "quantization": "int8"}
    measurement = {"hyperparameters": values, "metrics": {"val_accuracy": 0.9, "val_log_loss": 0.3,
                                                          "p50_ms": 0.01, "size_kb": 30.0, "feasible": 1.0,
                                                          "score": 0.9}}
    rng = np.random.default_rng(22)
    for field, mutated in _mutations(state, rng, 20):
        (tmp_path / "pipeline_state.json").write_text(json.dumps(mutated))
        kept = valid_stages(tmp_path / "pipeline_state.json")
        assert kept == {} or json.dumps(kept) == json.dumps(mutated["stages"]), field
    trial = tmp_path / "trial_00"
    trial.mkdir()
    for field, mutated in _mutations(measurement, rng, 20):
        (trial / "measurement.json").write_text(json.dumps(mutated))
        found = _finished_measurement(trial, values)
        assert found is None or all(isinstance(v, float) and np.isfinite(v) for v in found.values()), field


def test_a_search_timed_on_an_unreachable_device_is_one_line(tmp_path):
    """No budgets, so nothing is screened: the first trial's timing meets the dead device.
    KerasTuner would retry that as a failed trial and end in its own RuntimeError."""
    done = subprocess.run([*PIPELINE, "search", "--model", "mlp", "--epochs", "1", "--trials", "2",
                           "--device", "ssh://127.0.0.1:1", "--ssh-option", "ConnectTimeout=5",
                           "--out", str(tmp_path / "s"), "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=PROJECT)
    assert done.returncode == 9, done.stderr[-2000:]
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_records_the_report_reads_are_checked_to_their_leaves(quantized_run, tmp_path):
    """verify.json, bench.json and quantize.json mutated at any depth (an interval, the TFLite
    Micro arena, a timing spread, a recovery's raised layers): `pipeline report` writes its report
    or says in one line which file is damaged (exit 7); never a traceback. Before: a wrong type one
    level down ended in a traceback."""
    import shutil

    from tests.hostile.helpers import invoke

    run_dir = tmp_path / "run"
    shutil.copytree(quantized_run, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    assert invoke("verify", "--run", run_dir, "--artifact", "model_int8.tflite").exit_code == 0
    assert invoke("bench", "--run", run_dir, "--runs", "5", "--warmup", "1", "--min-seconds", "0").exit_code == 0
    records = {name: json.loads((run_dir / name).read_text()) for name in ("verify.json", "bench.json")}
    recovered = {"status": "recovered", "artifact": "model_int8_mixed.tflite", "raisable_layers": 4,
                 "raised": [{"op": "FULLY_CONNECTED", "precision": "int16"}],
                 "full_int8": {"top1_agreement": 0.9}, "validation": {"top1_agreement": 0.99}}
    records["quantize.json"] = {**json.loads((run_dir / "quantize.json").read_text()), "recovery": recovered}
    # Each leaf the report reads, one at a time: refused in one line naming the file.
    targeted = [("verify.json", ("artifacts", 0, "accuracy_ci95"), "x"),
                ("verify.json", ("artifacts", 0, "top1_agreement_ci95"), [0.9]),
                ("verify.json", ("artifacts", 0, "metric_drop_ci95"), [0.2, -0.1]),
                ("verify.json", ("artifacts", 0, "micro"), {"arena_bytes": "big", "flash_bytes": 10}),
                ("verify.json", ("artifacts", 0, "gates"), {"metric_drop": {"passed": "yes"}}),
                ("bench.json", ("results", 0, "p50_spread_ms"), [1]),
                ("bench.json", ("results", 0, "p50_ms"), -3.0),
                ("quantize.json", ("recovery", "raised"), 3),
                ("quantize.json", ("recovery", "validation"), {"top1_agreement": "high"})]
    for name, path, value in targeted:
        mutated = json.loads(json.dumps(records[name]))
        node = mutated
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        (run_dir / name).write_text(json.dumps(mutated))
        result = invoke("report", "--run", run_dir)
        assert result.exit_code == 7, (name, path, result.output[-800:])
        assert result.stderr.count("\n") == 1 and f"{name} is damaged" in result.stderr, result.stderr
        (run_dir / name).write_text(json.dumps(records[name]))
    # And a seeded fuzz at any depth: the report, or one line; never a traceback.
    rng = np.random.default_rng(34)
    for name, count in (("verify.json", 12), ("bench.json", 6), ("quantize.json", 6)):
        original = records[name]
        for field, mutated in _mutations(original, rng, count):
            (run_dir / name).write_text(json.dumps(mutated, allow_nan=True))
            result = invoke("report", "--run", run_dir)
            assert result.exit_code in (0, 7), (name, field, result.output[-800:])
            assert "Traceback" not in result.output and not (
                result.exception and not isinstance(result.exception, SystemExit)), (name, field, result.exception)
            if result.exit_code == 7:
                assert result.stderr.count("\n") == 1 and f"{name} is damaged" in result.stderr, result.stderr
        (run_dir / name).write_text(json.dumps(original))
