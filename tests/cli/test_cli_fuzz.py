"""Seeded CLI fuzzing: hundreds of bad invocations of every command, through the real entry
points (``pipeline`` and ``edge-runtime``), each of which must end in exactly one ``error:``
line and a documented exit code (README "Exit codes"), never a traceback."""
import io
import json
import shutil
import zipfile
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

DOCUMENTED = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
SEED = 0

# (command, option, lowest valid value, integer?) for every numeric option of every command
NUMERIC = [
    ("train", "--epochs", 1, True), ("train", "--batch-size", 1, True),
    ("train", "--learning-rate", 1e-12, False), ("train", "--early-stopping", 0, True),
    ("train", "--seed", 0, True), ("train", "--image-size", 4, True),
    ("import", "--seed", 0, True), ("import", "--image-size", 4, True),
    ("prune", "--sparsity", 1e-9, False), ("prune", "--fine-tune-epochs", 0, True),
    ("prune", "--learning-rate", 1e-12, False),
    ("quantize", "--calibration-samples", 0, True),
    ("convert", "--opset", 9, True), ("convert", "--calibration-samples", 0, True),
    ("bench", "--runs", 1, True), ("bench", "--warmup", 0, True), ("bench", "--min-seconds", 0, False),
    ("bench", "--threads", 1, True),
]
BAD_NUMBERS = ["-1", "nan", "inf", "-inf", "1e308", "99999999999999999999", "abc", "", "1,,x"]


def _bad_values(lowest, integer):
    values = list(BAD_NUMBERS)
    if lowest > 0:
        values.append("0")
    if integer:
        values.append("1.5")
    return values


def _run_pipeline(argv):
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main_argv = ["pipeline", *map(str, argv)]
            import sys

            saved, sys.argv = sys.argv, main_argv
            try:
                main()
                code = 0
            finally:
                sys.argv = saved
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _run_edge(argv):
    from edge_runtime.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _assert_one_error_line(case, code, stderr):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert code in DOCUMENTED, (case, code, stderr[-1500:])
    assert "Traceback" not in stderr, (case, stderr[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, stderr[-1500:])


def _malformed_files(root, rng):
    """Files of the wrong kind, generated from the seed: name -> path."""
    root.mkdir()
    files = {}

    def add(name, content):
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        files[name] = path

    add("random.npz", rng.bytes(512))
    add("empty.npz", b"")
    add("text.npz", "x_train,y_train\n1,2\n")
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.zeros((10, 4)), y_train=np.zeros(10))
    add("truncated.npz", buffer.getvalue()[: len(buffer.getvalue()) // 2])
    np.savez(root / "nokeys.npz", a=np.zeros(3))
    files["nokeys.npz"] = root / "nokeys.npz"
    np.savez(root / "strings.npz", x_train=np.array(["a", "b"]), y_train=np.array([0, 1]),
             x_test=np.array(["c"]), y_test=np.array([0]))
    files["strings.npz"] = root / "strings.npz"
    np.savez(root / "nan.npz", x_train=np.full((20, 4), np.nan), y_train=np.arange(20) % 2,
             x_test=np.zeros((4, 4)), y_test=np.array([0, 1, 0, 1]))
    files["nan.npz"] = root / "nan.npz"
    np.savez(root / "mismatch.npz", x_train=np.zeros((20, 4)), y_train=np.arange(7) % 2,
             x_test=np.zeros((4, 4)), y_test=np.array([0, 1, 0, 1]))
    files["mismatch.npz"] = root / "mismatch.npz"
    np.savez(root / "empty_arrays.npz", x_train=np.zeros((0, 4)), y_train=np.zeros(0, int),
             x_test=np.zeros((0, 4)), y_test=np.zeros(0, int))
    files["empty_arrays.npz"] = root / "empty_arrays.npz"
    add("garbage.keras", rng.bytes(2048))
    with zipfile.ZipFile(root / "hollow.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
    files["hollow.keras"] = root / "hollow.keras"
    add("garbage.h5", rng.bytes(2048))
    add("garbage.npy", rng.bytes(300))
    add("floats.npy", b"")
    np.save(root / "floats.npy", rng.random((5, 28, 28, 1)).astype(np.float32))
    np.save(root / "wrong_shape.npy", np.zeros((5, 3, 3), np.uint8))
    files["wrong_shape.npy"] = root / "wrong_shape.npy"
    add("bad.toml", "[train\nepochs = 3")
    add("types.toml", "[train]\nepochs = \"many\"\n")
    add("unknown.toml", "[trian]\nepochs = 3\n")
    add("list.yaml", "- a\n- b\n")
    add("bad.yaml", "train: {epochs: [1, 2\n")
    add("nan.yaml", "bench:\n  min_seconds: .nan\n")
    add("config.json", "{}")
    add("random.tflite", rng.bytes(4096))
    add("random.onnx", rng.bytes(4096))
    (root / "not_a_savedmodel").mkdir()
    files["not_a_savedmodel"] = root / "not_a_savedmodel"
    return files


@pytest.fixture(scope="module")
def fuzz_run(trained_run, tmp_path_factory):
    """A private copy of the seed run with an int8 artifact and a damaged sidecar beside it."""
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize

    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns(".lock"))
    quantize(run_dir, QuantizeOptions(modes=["int8"]))
    return run_dir


def _cases(run_dir, files):
    cases = []
    for command, option, lowest, integer in NUMERIC:
        for value in _bad_values(lowest, integer):
            if command == "import":
                target = [files["garbage.keras"]]
            elif command == "train":
                target = ["--model", "mlp", "--out", run_dir.parent / "never"]
            else:
                target = ["--run", run_dir]
            cases.append([command, *target, option, value])
    for name in ("random.npz", "empty.npz", "text.npz", "truncated.npz", "nokeys.npz", "strings.npz",
                 "nan.npz", "mismatch.npz", "empty_arrays.npz", "garbage.npy"):
        cases.append(["train", "--model", "mlp", "--dataset", f"npz:{files[name]}", "--out",
                      run_dir.parent / "never"])
        cases.append(["import", files["garbage.h5"], "--dataset", f"npz:{files[name]}"])
    for name in ("garbage.keras", "hollow.keras", "garbage.h5", "not_a_savedmodel", "random.npz"):
        cases.append(["train", "--model", files[name], "--epochs", "1", "--out", run_dir.parent / "never"])
        cases.append(["import", files[name], "--out", run_dir.parent / "never"])
    for name in ("garbage.npy", "floats.npy", "wrong_shape.npy", "random.npz", "empty.npz", "text.npz"):
        cases.append(["quantize", "--int8", "--calibration-data", files[name], "--run", run_dir])
        cases.append(["convert", "--to", "onnx", "--calibration-data", files[name], "--run", run_dir])
    for name in ("bad.toml", "types.toml", "unknown.toml", "list.yaml", "bad.yaml", "nan.yaml",
                 "config.json", "random.npz"):
        cases.append(["run", files[name], "--out", run_dir.parent / "never"])
    for setting in ("train.epochs=0", "train=3", "nosection.x=1", "train.model", "bench.threads=[]",
                    "quantize.modes=[\"int2\"]", "convert.targets=[\"coreml\"]", "prune.sparsity=[1.5]",
                    "verify.gates={\"int8\": {}}", "constraints.max_latency_ms=-1",
                    "bench.devices=[\"pi@board\"]", "data.val_fraction=2"):
        cases.append(["run", "--set", setting, "--out", run_dir.parent / "never"])
    for args in (["train", "--optimizer", "adamw"], ["train", "--backend", "tensorflw"],
                 ["train", "--distribute", "cluster"], ["quantize", "--recvoer"], ["frobnicate"],
                 ["verify", "--gate", "int8.metric_drop"], ["verify", "--gate", "nokind.x=1"],
                 ["verify", "--artifact", "missing.tflite"], ["bench", "--artifact", "missing.tflite"],
                 ["bench", "--device", "ssh://-oProxyCommand=x"], ["bench", "--device", "ftp://pi"],
                 ["bench", "--device", "ssh://pi@board", "--remote-dir", "/tmp/$(reboot)"],
                 ["convert", "--to", "coreml"], ["quantize", "--int2"], ["prune", "--skip", "nolayer"],
                 ["report", files["random.npz"]], ["train", "--resume", "--run", run_dir.parent / "nowhere"]):
        needs_run = args[0] in ("verify", "bench", "convert", "quantize", "prune") and "--run" not in args
        cases.append([*args, *(["--run", run_dir] if needs_run else [])])
    for name in ("random.tflite", "random.onnx", "garbage.npy", "random.npz"):
        cases.append(["verify", "--artifact", files[name], "--run", run_dir])
    cases.append(["verify", "--run", files["not_a_savedmodel"]])
    cases.append(["bench", "--run", files["random.npz"]])
    return cases


def _edge_cases(run_dir, files):
    artifact = run_dir / "model_int8.tflite"
    cases = []
    for command in ("info", "predict", "eval", "bench"):
        for name in ("random.tflite", "random.onnx", "garbage.npy", "empty.npz", "not_a_savedmodel"):
            inputs = [files["floats.npy"]] if command in ("predict", "eval") else []
            cases.append([command, files[name], *inputs])
    for name in ("garbage.npy", "random.npz", "empty.npz", "wrong_shape.npy", "nokeys.npz", "text.npz"):
        cases.append(["predict", artifact, files[name]])
        cases.append(["eval", artifact, files[name]])
    cases.append(["predict", artifact, files["floats.npy"], "--raw"])  # already-scaled floats
    for option, values in (("--runs", ["0", "-5", "nan", "x"]), ("--warmup", ["-1", "1e999"]),
                           ("--min-seconds", ["-1", "nan", "1e9"]), ("--threads", ["0", "1,,x", "-2"])):
        for value in values:
            cases.append(["bench", artifact, option, value])
    cases += [["frobnicate", artifact], [], ["info"], ["bench", artifact, "--sample", files["garbage.npy"]]]
    return cases


@pytest.mark.slow
def test_hundreds_of_bad_invocations_each_give_one_error_line(fuzz_run, tmp_path):
    rng = np.random.default_rng(SEED)
    files = _malformed_files(tmp_path / "files", rng)
    # a sidecar that is not JSON beside a copy of the artifact
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    shutil.copy2(fuzz_run / "model_int8.tflite", damaged / "model_int8.tflite")
    (damaged / "model_int8.tflite.json").write_text("{truncated")
    pipeline_cases = _cases(fuzz_run, files)
    pipeline_cases.append(["verify", "--artifact", damaged / "model_int8.tflite", "--run", fuzz_run])
    edge_cases = _edge_cases(fuzz_run, files)
    edge_cases.append(["info", damaged / "model_int8.tflite"])
    assert len(pipeline_cases) + len(edge_cases) >= 200
    before = {p.name: p.read_bytes() for p in fuzz_run.iterdir() if p.is_file() and p.name != ".lock"}
    failures = []  # every failing invocation, reported together
    for runner_, prefix, cases in ((_run_pipeline, [], pipeline_cases), (_run_edge, ["edge-runtime"], edge_cases)):
        for case in cases:
            try:
                code, _, stderr = runner_(case)
                _assert_one_error_line([*prefix, *case], code, stderr)
            except Exception as exc:  # noqa: BLE001 - a traceback escaping is itself a finding
                failures.append(f"{[str(c) for c in [*prefix, *case]]}: {type(exc).__name__}: "
                                f"{str(exc)[-400:]}")
    assert not failures, f"{len(failures)} bad invocations misbehaved:\n" + "\n".join(failures)
    # nothing already written was lost or changed by any of them
    after = {p.name: p.read_bytes() for p in fuzz_run.iterdir() if p.is_file() and p.name != ".lock"}
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert changed == [], changed
    assert not (fuzz_run.parent / "never").exists() or not any((fuzz_run.parent / "never").glob("*.keras"))
    print(json.dumps({"pipeline_cases": len(pipeline_cases), "edge_runtime_cases": len(edge_cases)}))
