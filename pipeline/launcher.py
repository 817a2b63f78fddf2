"""The ``pipeline`` script's entry point: a device install (``pip install keras-edge-pipeline``,
numpy + LiteRT only) gets one line naming the extra to install instead of an ImportError.
TensorFlow is not required: without it (``keras-edge-pipeline[deploy]``), Keras runs on torch
or jax and the stages that need TensorFlow say so in one line."""
from __future__ import annotations

import importlib.util
import sys

WORKSTATION_PACKAGES = ("typer", "keras")


def main() -> None:
    missing = [name for name in WORKSTATION_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: the pipeline command runs on a workstation and needs "
              f"{', '.join(missing)}: pip install 'keras-edge-pipeline[train]' (or [deploy], without "
              f"TensorFlow; this install is "
              f"the device runtime: use edge-runtime here)", file=sys.stderr)
        raise SystemExit(2)
    from pipeline.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
