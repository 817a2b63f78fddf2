"""The model zoo's registry, filled by ``@register_model`` when the zoo modules are imported."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Task = Literal["classifier", "reconstruction", "regression"]

# The training recipe every zoo model starts from; a model's own ``recipe`` overrides fields
# where this one does not suit it. Command-line options and config fields override both.
DEFAULT_RECIPE: dict[str, Any] = {
    "epochs": 15, "batch_size": 32, "optimizer": "rmsprop", "learning_rate": 1e-3,
    "lr_schedule": "cosine",
}


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry: a builder ``(input_shape, num_classes, **options) -> keras.Model``."""

    name: str
    build: Callable[..., Any]
    task: Task
    summary: str
    # Full-int8 TFLite is expected to work for this model (every classifier here).
    int8: bool = True
    # Overrides of DEFAULT_RECIPE that this model needs to learn with its defaults.
    recipe: dict[str, Any] = field(default_factory=dict)

    def full_recipe(self) -> dict[str, Any]:
        return {**DEFAULT_RECIPE, **self.recipe}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, task: Task = "classifier", int8: bool = True,
                   recipe: dict[str, Any] | None = None):
    """Register a builder under ``name``; a duplicate or malformed name is a bug, raised at import."""
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"model name '{name}' must be a lower-case identifier")
    if task not in ("classifier", "reconstruction", "regression"):
        raise ValueError(f"model '{name}': unknown task '{task}'")
    unknown = sorted(set(recipe or {}) - set(DEFAULT_RECIPE))
    if unknown:
        raise ValueError(f"model '{name}': unknown recipe field(s) {unknown}")

    def decorator(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        summary = (build.__doc__ or "").strip().splitlines()[0] if build.__doc__ else name
        _REGISTRY[name] = ModelSpec(name, build, task, summary, int8, dict(recipe or {}))
        return build
    return decorator


class UnknownModelError(LookupError):
    """A name the zoo does not hold; ``known`` lists the names it does."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown model '{name}'; known: {', '.join(sorted(known))}")
        self.name, self.known = name, known


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, list(_REGISTRY)) from None


def model_names() -> list[str]:
    return list(_REGISTRY)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any):
    """Build a fresh, uncompiled zoo model for the data set's input shape and class count."""
    return get_model_spec(name).build(tuple(input_shape), int(num_classes), **options)
