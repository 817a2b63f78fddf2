"""The one place that touches Keras internals (``keras.src``): each use says why, so an
upgrade that moves them breaks here, loudly, and nowhere else."""
from __future__ import annotations


def seed_keras_without_tensorflow(seed: int) -> None:
    """What ``keras.utils.set_random_seed`` does for Keras' own generators, without its side
    effect of importing TensorFlow (which a jax or torch training process keeps out)."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
