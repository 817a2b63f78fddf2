"""Hostile conditions: State that lies: a stage state naming missing outputs reruns it; garbage
state is ignored. Each case asserts what a user sees (one ``error:`` line and a documented exit
code, or the right result) and what a user cares about (their files unchanged)."""
import json

import pytest


def test_a_state_that_claims_a_stage_with_missing_outputs_reruns_it(tmp_path):
    from pipeline.running.stage_cache import Stages

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stages = Stages(run_dir, set(), None)
    ran = []

    def work():
        ran.append(1)
        (run_dir / "model_int8.tflite").write_bytes(b"artifact")
        return [run_dir / "model_int8.tflite"]

    assert stages.run("quantize", "quantize", {"a": 1}, work)
    (run_dir / "model_int8.tflite").unlink()  # the state still says done
    assert Stages(run_dir, set(), None).run("quantize", "quantize", {"a": 1}, work) and len(ran) == 2
    state = json.loads((run_dir / "pipeline_state.json").read_text())
    state["stages"]["quantize"]["outputs"] = {}  # "done, and it wrote nothing"
    (run_dir / "pipeline_state.json").write_text(json.dumps(state))
    assert Stages(run_dir, set(), None).run("quantize", "quantize", {"a": 1}, work) and len(ran) == 3
    assert not Stages(run_dir, set(), None).run("quantize", "quantize", {"a": 1}, work)  # intact: cached


@pytest.mark.parametrize("content", [b"\x00garbage", b"[]", b'{"stages": []}', b'{"stages": {"train": 5}}',
                                     b'{"stages": {"train": {"inputs": 1, "outputs": {"../../etc/passwd": "x"}}}}'])
def test_a_garbage_state_is_ignored_not_a_traceback(tmp_path, content):
    from pipeline.running.stage_cache import Stages

    (tmp_path / "pipeline_state.json").write_bytes(content)
    assert Stages(tmp_path, set(), None).state == {"stages": {}}
