"""The one place that touches LiteRT internals: the interpreter has no public list of the ops
in a model. ``tests/compat/test_compat.py`` checks it, so an upgrade that drops it fails there."""
from __future__ import annotations


def op_names(interpreter) -> list[str]:
    """The builtin (or custom) op of every node, in execution order; empty when the runtime
    lacks the private helper (older tflite-runtime)."""
    details = getattr(interpreter, "_get_ops_details", None)
    return [op["op_name"] for op in details()] if details is not None else []


def op_outputs(interpreter) -> list[tuple[str, str]]:
    """(op name, name of its first output tensor) of every node, in execution order."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return []
    names = {tensor["index"]: tensor["name"] for tensor in interpreter.get_tensor_details()}
    return [(op["op_name"], names.get(op["outputs"][0], "")) for op in details() if len(op["outputs"])]


def op_tensors(interpreter) -> list[tuple[str, list[dict], list[dict]]]:
    """(op name, its input tensors' details, its output tensors' details) of every node, in
    execution order (constants included: a tensor detail's ``index`` names it)."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return []
    tensors = {tensor["index"]: tensor for tensor in interpreter.get_tensor_details()}
    return [(op["op_name"], [tensors[i] for i in op["inputs"] if i in tensors],
             [tensors[i] for i in op["outputs"] if i in tensors]) for op in details()]
