import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import importlib.util  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# As every pipeline command does before TensorFlow runs an op: deterministic kernels. Enabled
# only after other ops ran, kernels already created keep their non-deterministic variants and
# artifacts trained in this process would differ by an ulp from those of a fresh process.
# (The emulated device that runs tests/on_device has no Keras at all.)
if importlib.util.find_spec("keras") is not None:
    from pipeline.core.backend import import_keras

    import_keras()

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def digits():
    from pipeline.data.loaders import load_dataset

    return load_dataset("digits")


_SHARED_RUNS: dict = {}  # run directory -> its files' (size, mtime) when the fixture made it


def _state(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The README's default: the seed CNN trained on digits with default settings. Shared by
    every test, so read-only: a test that writes works on its own copy (checked after each)."""
    import fcntl

    from pipeline.config.stages import TrainOptions
    from pipeline.core.fsutil import read_json
    from pipeline.training.train import TrainResult, train

    # Under pytest-xdist the workers share one training: the first trains, the others wait for
    # it and read its record (every worker's temporary folders lie in one parent).
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    root = tmp_path_factory.getbasetemp().parent / "shared-runs" if shared else tmp_path_factory.mktemp("runs")
    root.mkdir(exist_ok=True)
    with open(root / ".train-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = root / "seed" / "train.json"
        result = (TrainResult(root / "seed", read_json(record)) if record.exists()
                  else train(root / "seed", TrainOptions(), runs_root=root, verbose=0))
    _SHARED_RUNS[result.run_dir] = _state(result.run_dir)
    return result


@pytest.fixture(autouse=True)
def _shared_runs_are_left_as_they_were(request):
    """A test that changed the shared trained run fails here, by name: the next test would see
    its changes (an order-dependent suite)."""
    yield
    for run_dir, before in _SHARED_RUNS.items():
        after = _state(run_dir)
        if after != before:
            _SHARED_RUNS[run_dir] = after  # report it once, for the test that did it
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            pytest.fail(f"{request.node.nodeid} changed the shared trained run: {', '.join(changed[:8])}")


def copy_run(run_dir: Path, parent: Path) -> Path:
    """A copy of a run directory (its locks left behind) that a test may change."""
    destination = Path(parent) / Path(run_dir).name
    shutil.copytree(run_dir, destination, ignore=shutil.ignore_patterns("*.lock"))
    return destination


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data is not part of a fresh clone)")
    return path
