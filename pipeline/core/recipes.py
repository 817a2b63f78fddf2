"""Training recipes: the zoo's models and their default recipes, a task's loss and metrics,
the optimizers and learning-rate schedules training, fine-tuning and search share."""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.errors import unknown_name

OPTIMIZERS = ("rmsprop", "adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "exponential", "plateau")


def zoo_spec(name: str):
    """The zoo's entry for ``name``; an unknown name is a usage error naming the closest."""
    import models

    try:
        return models.get_model_spec(name)
    except models.UnknownModelError as exc:
        raise unknown_name("model", exc.name, exc.known) from None


def recipe_for(model: str) -> dict[str, Any]:
    """The default training recipe of a zoo model (a user's model file gets the common one)."""
    from models.registry import DEFAULT_RECIPE
    from pipeline.core.modelio import is_model_path

    if is_model_path(model):
        return dict(DEFAULT_RECIPE)
    return zoo_spec(model).full_recipe()


def model_task(model: str, task: str | None = None) -> str:
    """``classifier``, ``reconstruction`` or ``regression``: the task asked for, else a zoo
    model's own (a user's model file classifies unless ``task`` says otherwise). A zoo model asked
    for another task than its own is a usage error: its head is built for its own."""
    from pipeline.core.errors import UsageError
    from pipeline.core.modelio import is_model_path
    from pipeline.core.tasks import TaskError, normalize_task

    if task is not None:
        try:
            task = normalize_task(task)
        except TaskError as exc:
            raise UsageError(f"--task: {exc}") from None
    if is_model_path(model):
        return task or "classifier"
    own = zoo_spec(model).task
    if task is not None and task != own:
        raise UsageError(f"zoo model '{model}' is a {own} model, not a {task}: pick one of that task "
                         f"(`pipeline models`) or train your own model file")
    return own


def compile_for_task(model, task: str, optimizer=None) -> None:
    """The loss and metrics of a task, in one place: training, resuming and fine-tuning agree."""
    from pipeline.core.tasks import loss_for, normalize_task

    task = normalize_task(task)
    model.compile(optimizer=optimizer if optimizer is not None else "rmsprop", loss=loss_for(task),
                  metrics={"classifier": ["accuracy"], "regression": ["mae"]}.get(task, []))


def optimizer_for(keras, config, num_train: int):
    """The optimizer a training config asks for, under its learning-rate schedule."""
    return make_optimizer(keras, config.optimizer, scheduled_rate(
        keras, config.learning_rate, config.lr_schedule, num_train, config.batch_size, config.epochs))


def scheduled_rate(keras, rate: float, schedule: str, samples: int, batch_size: int, epochs: int):
    """The learning rate, or its schedule over ``epochs`` of ``samples`` ("plateau" is a
    callback on validation loss: the rate itself stays constant)."""
    steps_per_epoch = max(1, -(-samples // batch_size))
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, steps_per_epoch * epochs)
    if schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(rate, steps_per_epoch, 0.9)
    return rate


def make_optimizer(keras, name: str, learning_rate):
    """One of ``OPTIMIZERS`` at this learning rate (or schedule). Named: Keras would number
    unnamed optimizers per process (``rm_sprop_1`` after an earlier one), and the name is
    saved in the ``.keras`` file, so a resumed run would write other bytes than a whole one."""
    return {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
            "sgd": lambda learning_rate, name: keras.optimizers.SGD(learning_rate, momentum=0.9, name=name),
            }[name](learning_rate=learning_rate, name=name)


def class_weights(class_weight: str | None, y_train: np.ndarray) -> dict[int, float] | None:
    """``balanced``: each class weighted by the inverse of its share of the training labels."""
    if class_weight != "balanced":
        return None
    classes = np.unique(y_train)
    counts = np.bincount(y_train)[classes]
    weights = len(y_train) / (len(classes) * counts)
    return {int(c): float(w) for c, w in zip(classes, weights)}
