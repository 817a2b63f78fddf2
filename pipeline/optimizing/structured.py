"""Structured pruning: drop whole Conv filters / Dense units by L1 norm and rebuild smaller.

Channels flow through the graph in *groups*: a Conv2D or Dense opens a group; layers such
as BatchNormalization, ReLU, pooling or a depthwise conv pass it on; an ``Add`` merges the
groups of its inputs (a residual block must keep the same channels on both branches).
A group is frozen (kept whole) when it reaches a model output, a skipped layer, the model
input, or a layer whose weights this module cannot slice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import UsageError

PRODUCERS = ("Conv2D", "Dense")
PASS_THROUGH = ("BatchNormalization", "ReLU", "Activation", "MaxPooling2D", "AveragePooling2D",
                "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Dropout", "LeakyReLU",
                "ZeroPadding2D", "DepthwiseConv2D", "InputLayer")


@dataclass
class _Flat:
    """A flattened tensor: ``positions`` spatial places, each of the group's channels."""

    group: int
    positions: int
    channels: int


class _Groups:
    def __init__(self):
        self.parent: list[int] = []
        self.frozen: set[int] = set()

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            if b in self.frozen:
                self.frozen.add(a)
        return a

    def freeze(self, g) -> None:
        if isinstance(g, _Flat):
            g = g.group
        self.frozen.add(self.find(g))

    def is_frozen(self, g: int) -> bool:
        return self.find(g) in self.frozen


def _graph(model) -> tuple[dict[str, list[str]], set[str]]:
    """The layers that feed each layer, and the layers that produce the model's outputs, from
    the public ``layer.input`` / ``layer.output`` tensors (zoo and user models call each
    layer once)."""
    import keras

    if isinstance(model, keras.Sequential):  # a chain (its layers' tensors belong to its
        names = [layer.name for layer in model.layers]  # inner functional model)
        return {name: names[i - 1:i] for i, name in enumerate(names)}, {names[-1]}
    producer = {id(layer.output): layer.name for layer in model.layers}
    inbound = {layer.name: [] if isinstance(layer, keras.layers.InputLayer) else
               [producer[id(t)] for t in keras.tree.flatten(layer.input) if id(t) in producer]
               for layer in model.layers}
    return inbound, {producer[id(t)] for t in model.outputs}


def shrink(model, sparsity: float, skip: list[str] | tuple[str, ...] = ()):
    """A new, smaller model with ``sparsity`` of each prunable group's channels removed."""
    import keras

    layers = {layer.name: layer for layer in model.layers}
    groups, opened, consumed = _trace_groups(model, layers, skip)
    keep, widths = _choose_channels(layers, opened, groups, sparsity)
    if all(len(keep[root]) == widths[root] for root in keep):
        raise UsageError("structured pruning found nothing to remove: every channel group is "
                         "frozen (outputs, skipped layers or unsupported layers)")
    return _rebuild(keras, model, layers, opened, groups, keep, consumed)


def _trace_groups(model, layers: dict, skip):
    """Walk the graph once: the channel groups, the group each producer opens, and the group
    each layer consumes."""
    inbound, outputs = _graph(model)
    groups = _Groups()
    tensor_group: dict[str, object] = {}   # layer name -> group id, _Flat, or None (input)
    opened: dict[str, int] = {}            # producer layer -> the group it opens
    consumed: dict[str, object] = {}       # layer -> group of its (first) input
    for name, layer in layers.items():
        kind = type(layer).__name__
        sources = [tensor_group.get(src) for src in inbound.get(name, [])]
        source = consumed[name] = sources[0] if sources else None
        if kind == "InputLayer":
            tensor_group[name] = None
        elif kind in PRODUCERS:
            tensor_group[name] = opened[name] = groups.new()
            if name in outputs or name in skip:
                groups.freeze(opened[name])
        elif kind == "DepthwiseConv2D" and layer.depth_multiplier != 1:
            if source is not None:
                groups.freeze(source)
            tensor_group[name] = groups.new()
            groups.freeze(tensor_group[name])
        elif kind in PASS_THROUGH:
            tensor_group[name] = source
        elif kind == "Add":
            tensor_group[name] = _merge_add(sources, groups)
        elif kind == "Flatten" and isinstance(source, int):
            shape = layers[inbound[name][0]].output.shape
            tensor_group[name] = _Flat(source, math.prod(shape[1:-1]), shape[-1])
        else:
            # Unknown to this module (Reshape, Concatenate, recurrent...): its inputs keep
            # every channel and its weights are copied whole.
            _freeze_all(sources, groups)
            tensor_group[name] = None
        if name in outputs and tensor_group.get(name) is not None:
            groups.freeze(tensor_group[name])
    return groups, opened, consumed


def _merge_add(sources: list, groups: _Groups):
    """An ``Add`` ties its inputs' channels together (a residual block keeps them aligned);
    an input that is not a plain group (the model input, a flattened tensor) freezes them."""
    real = [s for s in sources if isinstance(s, int)]
    if len(real) != len(sources):
        _freeze_all(sources, groups)
        return real[0] if real else None
    merged = real[0]
    for other in real[1:]:
        merged = groups.union(merged, other)
    return merged


def _freeze_all(sources: list, groups: _Groups) -> None:
    for source in sources:
        if source is not None:
            groups.freeze(source)


def _choose_channels(layers, opened, groups: _Groups, sparsity: float):
    """Per group root: the channel indices to keep (highest summed L1 norm), and the width."""
    importance: dict[int, np.ndarray] = {}
    for name, group in opened.items():
        root = groups.find(group)
        kernel = np.asarray(layers[name].weights[0].numpy())
        l1 = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
        importance[root] = importance.get(root, 0) + l1
    keep = {}
    for root, scores in importance.items():
        width = len(scores)
        if root in groups.frozen:
            keep[root] = np.arange(width)
        else:
            count = max(1, int(round(width * (1.0 - sparsity))))
            keep[root] = np.sort(np.argsort(-scores, kind="stable")[:count])
    return keep, {root: len(scores) for root, scores in importance.items()}


def _rebuild(keras, model, layers, opened, groups, keep, consumed):
    def kept(source, width: int) -> np.ndarray:
        if isinstance(source, _Flat):
            channels = kept(source.group, source.channels)
            return (np.arange(source.positions)[:, None] * source.channels + channels[None, :]).reshape(-1)
        if isinstance(source, int):
            return keep[groups.find(source)]
        return np.arange(width)

    config = model.get_config()
    entries = config["layers"]
    for entry in entries:
        entry.pop("build_config", None)  # recorded input shapes are the old, wider ones
        name = entry["config"]["name"]
        if name in opened:
            width = len(keep[groups.find(opened[name])])
            key = "filters" if "filters" in entry["config"] else "units"
            entry["config"][key] = int(width)
    smaller = model.__class__.from_config(config)
    for name, layer in layers.items():
        weights = layer.get_weights()
        if not weights:
            continue
        kind = type(layer).__name__
        source = consumed[name]
        out_keep = kept(opened[name], weights[0].shape[-1]) if name in opened else None
        if kind in PRODUCERS:
            kernel = weights[0]
            in_keep = kept(source, kernel.shape[-2])
            new = [kernel.take(in_keep, axis=-2).take(out_keep, axis=-1)]
            new += [w.take(out_keep, axis=-1) for w in weights[1:]]
        elif kind in ("BatchNormalization", "DepthwiseConv2D") and not isinstance(source, _Flat):
            in_keep = kept(source, weights[0].shape[-2] if kind == "DepthwiseConv2D" else weights[0].shape[-1])
            if kind == "DepthwiseConv2D":
                new = [weights[0].take(in_keep, axis=-2)] + [w.take(in_keep, axis=-1) for w in weights[1:]]
            else:
                new = [w.take(in_keep, axis=-1) for w in weights]
        else:
            new = weights
        smaller.get_layer(name).set_weights(new)
    return smaller
