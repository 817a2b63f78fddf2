import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import importlib.util  # noqa: E402
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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The README's default: the seed CNN trained on digits with default settings."""
    from pipeline.config.stages import TrainOptions
    from pipeline.training.train import train

    root = tmp_path_factory.mktemp("runs")
    result = train(root / "seed", TrainOptions(), runs_root=root, verbose=0)
    return result


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data is not part of a fresh clone)")
    return path
