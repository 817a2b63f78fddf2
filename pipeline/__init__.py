"""Keras → edge pipeline: train, prune, quantize, convert, verify, bench, report.

Python API (the same stages and config object as the CLI, for notebooks)::

    from pipeline import load_config, run
    result = run(load_config(overrides=["train.epochs=5"]))
    print(result.recommended, result.report)
"""
__version__ = "0.1.0"


def load_config(path=None, overrides=()):
    """Defaults, then a YAML/TOML file, then ``SECTION.FIELD=VALUE`` overrides."""
    from pipeline.config.load import load_config as _load_config

    return _load_config(path, list(overrides))


def run(config=None, *, out=None, force=(), progress=None):
    """Every stage, cached per stage; returns a ``RunResult`` (run_dir, report, recommended...)."""
    from pipeline.config.schema import Config
    from pipeline.running.orchestrator import run as _run

    return _run(config or Config(), out=out, force=list(force), progress=progress)


__all__ = ["__version__", "load_config", "run"]
