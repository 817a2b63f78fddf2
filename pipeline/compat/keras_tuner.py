"""KerasTuner internals, in one place (each checked by tests/compat/test_compat.py).

KerasTuner 1.4 writes its state (``oracle.json``, each ``trial.json``, the tuner's file) with
a plain ``open(path, "w")``: a kill in the middle of a write leaves a truncated JSON file,
and the search can no longer be resumed. Every one of those writes goes through
``keras_tuner.src.utils.save_json``; pointing it at the pipeline's atomic, link-refusing
writer makes each state file either the old one or the new one, never half of either.
"""
from __future__ import annotations

import json


def atomic_state_writes() -> None:
    """Route KerasTuner's state files through ``pipeline.core.fsutil.write_bytes`` (idempotent)."""
    from keras_tuner.src import utils

    if getattr(utils.save_json, "_pipeline_atomic", False):
        return

    def save_json(path, obj):
        from pipeline.core.fsutil import write_bytes

        text = json.dumps(obj)
        write_bytes(path, text.encode("utf-8"))
        return text

    save_json._pipeline_atomic = True
    utils.save_json = save_json


def seed_oracle(oracle, seed: int) -> None:
    """KerasTuner takes ``seed or random.randint(...)``: a seed of 0 would be a random one."""
    oracle.seed = seed
    oracle._seed_state = seed


def random_values(oracle) -> dict | None:
    """A new random draw of the oracle's space (None when the space is used up); KerasTuner's
    ``RandomSearchOracle`` keeps it private (``_random_values``)."""
    return oracle._random_values()


def values_hash(oracle, values: dict) -> str:
    """The digest KerasTuner files a draw under (``_compute_values_hash``), so a draw already
    tried or refused is known again."""
    return oracle._compute_values_hash(values)


def retry_queue(oracle) -> list:
    """The oracle's queue of trials to run again (KerasTuner has no public accessor)."""
    return oracle._retry_queue


def prompt_chief_exit() -> None:
    """KerasTuner's chief, once its oracle has no trials left, checks every 20 s whether its
    workers have gone (``oracle_chief.start_server``): up to 20 s added to every distributed
    search. Its module's ``time`` becomes one whose sleeps last at most a second."""
    import time as real_time
    import types

    from keras_tuner.src.distribute import oracle_chief

    if getattr(oracle_chief.time, "_pipeline_prompt", False):
        return
    shim = types.SimpleNamespace(**{name: getattr(real_time, name) for name in dir(real_time)
                                    if not name.startswith("__")})
    shim.sleep = lambda seconds: real_time.sleep(min(seconds, 1.0))
    shim._pipeline_prompt = True
    oracle_chief.time = shim
