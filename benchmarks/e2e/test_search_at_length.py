"""A search shared by a chief and two workers (KerasTuner's oracle over loopback: three
processes), and every searchable model's default space built (the suite builds the seed CNN's
and the MLP's, and keeps the search lock of each worker, tests/hostile/test_locks.py)."""
import json
import os
import socket
import subprocess
import time

import pytest

from tests.search.test_search import PIPELINE, SMALL, check_default_space

pytest.importorskip("keras_tuner")


def test_a_chief_and_two_workers_share_one_search(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "search"
    common = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    command = [*PIPELINE, *SMALL, "--trials", "3", "--rescore", "0", "--out", str(out)]  # the last --rescore counts
    chief = subprocess.Popen(command, env={**os.environ, **common, "KERASTUNER_TUNER_ID": "chief"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and chief.poll() is None:  # the chief's oracle listens first
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    workers = [subprocess.Popen(command, env={**os.environ, **common, "KERASTUNER_TUNER_ID": f"tuner{i}"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err[-3000:]
    _, err = chief.communicate(timeout=900)
    assert chief.returncode == 0, err[-3000:]
    summary = json.loads((out / "search.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED"] * 3
    runs = (out / "tuner" / "trials.log").read_text().split()[0::2]
    assert sorted(runs) == sorted(set(runs)) and len(runs) == 3  # no trial ran twice
    ran_by = {json.loads(p.read_text())["tuner_id"] for p in out.glob("tuner/trial_*/measurement.json")}
    assert ran_by <= {"tuner0", "tuner1"} and ran_by  # the workers ran them, the chief served


def test_every_searchable_model_has_a_default_space_that_builds(digits):
    """Each zoo model's default space builds, and its options change the model."""
    from pipeline.search.space import SPACES

    for model in SPACES:
        check_default_space(model, digits)
