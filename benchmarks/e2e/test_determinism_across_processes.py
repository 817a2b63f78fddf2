"""Byte-identical artifacts across processes, for every format: one model converted in two
processes that did different work before (and hash strings differently) gives the same bytes.
Moved out of the suite for time; tests/running/test_run.py keeps a forced re-run giving the same
bytes in one process."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

FORMATS = ("model_pruned_int8.tflite", "model_pruned_float16.tflite", "model_pruned_dynamic.tflite",
           "model_pruned_int16x8.tflite", "model_pruned_float32.tflite", "model_pruned_float32.onnx",
           "model_pruned_int8.onnx", "model_pruned_int8_tflite.onnx")


def _convert_in_a_new_process(run_dir, hash_seed: str, warm_up_first: bool) -> dict[str, str]:
    """Quantize and convert model_pruned.keras in a fresh process, after converting the
    unpruned model first when ``warm_up_first`` (what `pipeline run` does in one process)."""
    script = textwrap.dedent(f"""
        import json
        from pipeline.core.backend import import_keras
        import_keras()
        from pipeline.config.stages import ConvertOptions
        from pipeline.optimizing.convert import convert
        from pipeline.core.fsutil import sha256_file
        from pipeline.config.stages import QuantizeOptions
        from pipeline.optimizing.quantize import quantize
        run = {str(run_dir)!r}
        modes = ["int8", "float16", "dynamic", "int16x8"]
        for pruned in ([False, True] if {warm_up_first} else [True]):
            quantize(run, QuantizeOptions(modes=modes, pruned=pruned))
            convert(run, ConvertOptions(pruned=pruned))
        print(json.dumps({{name: sha256_file(run + "/" + name) for name in {list(FORMATS)!r}}}))
    """)
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_format_is_byte_identical_across_processes(trained_run, tmp_path):
    """A structured-pruned model, as `pipeline run` makes it: its ONNX used to differ (tf2onnx
    merges equal constants under whichever name comes first in that process)."""
    from pipeline.config.stages import PruneOptions
    from pipeline.optimizing.prune import prune

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns(".lock"))
    prune(run_dir, PruneOptions(sparsity=0.5, structured=True, fine_tune_epochs=1))
    first = _convert_in_a_new_process(run_dir, "1", warm_up_first=True)
    second = _convert_in_a_new_process(run_dir, "2", warm_up_first=False)
    assert first == second, sorted(name for name in FORMATS if first[name] != second[name])
