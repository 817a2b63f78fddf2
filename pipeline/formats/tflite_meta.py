"""What phone tooling reads from a ``.tflite``: a ``serving_default`` SignatureDef and TFLite
Metadata (the ``TFLITE_METADATA`` entry, a flatbuffer with file identifier ``M001``, and its
associated files packed as a zip archive after the model).

Written here with the ``flatbuffers`` builder, following the published schemas (TFLite's
``schema.fbs`` through TensorFlow's generated ``schema_py_generated``, and tflite-support's
``metadata_schema.fbs``, whose field order the slot numbers below follow): tflite-support's
own writers pin protobuf < 4 and cannot live beside TensorFlow. Everything is deterministic:
the same model and fields give the same bytes in any process. Model buffers keep the 16-byte
alignment the converter gives them (the schema's ``force_align: 16``).
"""
from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np

SIGNATURE_KEY = "serving_default"
METADATA_NAME = "TFLITE_METADATA"  # the entry in Model.metadata that tooling looks for
METADATA_IDENTIFIER = b"M001"
LABELS_FILE = "labels.txt"
MIN_PARSER_VERSION = "1.0.0"  # every field written here is in metadata schema 1.0.0
_TFLITE_IDENTIFIER = b"TFL3"
_BUFFER_ALIGNMENT = 16
# A zip member's timestamp: fixed, so the bytes do not depend on when they were written.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# metadata_schema.fbs enums
TENSOR_AXIS_LABELS = 2
_COLOR = {"UNKNOWN": 0, "RGB": 1, "GRAYSCALE": 2}
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties union
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union


def _schema():
    """The TFLite schema's object API: LiteRT's copy (importing TensorFlow's costs seconds), or
    TensorFlow's where an older LiteRT lacks it (the same schema, generated twice)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def read_model(content: bytes):
    """The flatbuffer as TensorFlow's object API (``ModelT``)."""
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(content), 0))


def _aligned_buffer(schema):
    class AlignedBufferT(schema.BufferT):
        """A buffer whose data starts on a 16-byte boundary, as the converter writes it."""

        def Pack(self, builder):  # noqa: N802 - the generated API's name
            data = None
            if self.data is not None and len(self.data):
                payload = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def write_model(model) -> bytes:
    """``ModelT`` back to bytes, buffers aligned."""
    import flatbuffers

    schema = _schema()
    aligned = _aligned_buffer(schema)
    for i, buffer in enumerate(model.buffers or []):
        if buffer.offset:  # > 2 GB models keep data outside the flatbuffer: not made here
            raise ValueError("models with external buffers are not supported")
        replacement = aligned()
        replacement.data, replacement.offset, replacement.size = buffer.data, 0, 0
        model.buffers[i] = replacement
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def signatures(content: bytes) -> dict[str, dict[str, list[str]]]:
    """Each SignatureDef's key with its input and output names, read from the flatbuffer."""
    model = read_model(flatbuffer_part(content))
    return {_text(s.signatureKey): {"inputs": [_text(t.name) for t in s.inputs or []],
                                    "outputs": [_text(t.name) for t in s.outputs or []]}
            for s in model.signatureDefs or []}


def with_signature(content: bytes, inputs: list[str] | None = None, outputs: list[str] | None = None) -> bytes:
    """``content`` with one ``serving_default`` SignatureDef over subgraph 0's inputs and
    outputs, named in order (any earlier SignatureDef is replaced). The default names are
    those the Keras export path gives a one-input model: ``input`` and ``output_0``, …"""
    schema = _schema()
    model = read_model(content)
    graph = model.subgraphs[0]
    count_in, count_out = len(graph.inputs), len(graph.outputs)
    inputs = inputs or (["input"] if count_in == 1 else [f"input_{i}" for i in range(count_in)])
    outputs = outputs or [f"output_{i}" for i in range(count_out)]
    if len(inputs) != count_in or len(outputs) != count_out:
        raise ValueError(f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs need names, "
                         f"got {len(inputs)} and {len(outputs)}")

    def tensor_map(name, index):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE_KEY, 0
    signature.inputs = [tensor_map(n, i) for n, i in zip(inputs, graph.inputs)]
    signature.outputs = [tensor_map(n, i) for n, i in zip(outputs, graph.outputs)]
    model.signatureDefs = [signature]
    return write_model(model)


def input_tensor(content: bytes) -> dict[str, Any]:
    """Subgraph 0's first input: shape, and its quantization when it is an integer tensor."""
    schema = _schema()
    model = read_model(flatbuffer_part(content))
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    found: dict[str, Any] = {"shape": [int(d) for d in tensor.shape], "quantization": None}
    integer = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16}
    q = tensor.quantization
    if tensor.type in integer and q is not None and q.scale is not None and len(q.scale):
        found["quantization"] = {"scale": float(q.scale[0]),
                                 "zero_point": int(q.zeroPoint[0]) if q.zeroPoint is not None else 0}
    return found


def normalization(spec: dict[str, Any] | None, channels: int) -> tuple[list[float], list[float]] | None:
    """The preprocessing spec as TFLite Metadata's NormalizationOptions, which take raw
    values to model input by ``(x - mean) / std``: ours is ``(raw * scale - mean) / std``,
    that is mean' = mean / scale and std' = std / scale, per channel."""
    if not spec:
        return None
    scale = float(spec.get("scale") or 1.0)
    mean, std = spec.get("mean"), spec.get("std")
    means = np.broadcast_to(np.asarray(0.0 if mean is None else mean, dtype=np.float64), (channels,))
    stds = np.broadcast_to(np.asarray(1.0 if std is None else std, dtype=np.float64), (channels,))
    return [float(m / scale) for m in means], [float(s / scale) for s in stds]


def with_metadata(content: bytes, fields: dict[str, Any]) -> bytes:
    """``content`` with TFLite Metadata built from ``fields`` (see ``metadata_fields``) and the
    class names packed as ``labels.txt`` (TENSOR_AXIS_LABELS of the output); earlier metadata
    of the same name, and an earlier packed archive, are replaced."""
    schema = _schema()
    model = read_model(flatbuffer_part(content))
    blob = _metadata_flatbuffer(fields)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(blob, dtype=np.uint8)
    entries = [m for m in model.metadata or [] if _text(m.name) != METADATA_NAME]
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*entries, entry]
    packed = write_model(model)
    labels = fields.get("labels")
    return _with_zip(packed, {LABELS_FILE: "\n".join(labels).encode() + b"\n"}) if labels else packed


def without_metadata(content: bytes) -> bytes:
    """``content`` with the TFLITE_METADATA entry, its buffer and the packed files removed
    (what a microcontroller's flash does not need)."""
    model = read_model(flatbuffer_part(content))
    keep = [m for m in model.metadata or [] if _text(m.name) != METADATA_NAME]
    dropped = {m.buffer for m in model.metadata or []} - {m.buffer for m in keep}
    if not dropped:
        return flatbuffer_part(content)
    model.metadata = keep or None
    for index in dropped:  # empty the buffer; renumbering would touch every tensor
        model.buffers[index].data = None
    return write_model(model)


def metadata_fields(*, name: str, description: str, version: str, spec: dict[str, Any] | None,
                    inputs: list[dict], quantized: bool, author: str = "",
                    license_text: str = "") -> dict[str, Any]:
    """What the metadata says, from what the sidecar says (the source of truth)."""
    shape = list((spec or {}).get("input_shape") or inputs[0].get("shape", [])[1:])
    channels = int(shape[-1]) if shape else 1
    image = len(shape) == 3 and channels in (1, 3)
    norm = normalization(spec, channels)
    quant = inputs[0].get("quantization") if quantized else None
    labels = list((spec or {}).get("class_names") or [])
    return {"name": name, "description": description, "version": version, "author": author, "license": license_text,
            "input": {"name": "input", "image": image, "color_space": "GRAYSCALE" if channels == 1 else "RGB",
                      "height": int(shape[0]) if image else 0, "width": int(shape[1]) if image else 0,
                      "mean": norm[0] if norm else None, "std": norm[1] if norm else None,
                      "quantization": quant, "description": _input_text(spec, quant)},
            "output": {"name": "probabilities", "description": "Probability of each class, in the order of "
                       f"{LABELS_FILE}." if labels else "The model's output."},
            "labels": labels}


def _input_text(spec, quant) -> str:
    text = "Raw samples normalized as (x - mean) / std with the mean and std given here"
    if quant and isinstance(quant, dict) and quant.get("scale"):
        text += (f", then quantized with scale {quant['scale']:.9g} and zero point {quant.get('zero_point', 0)}"
                 " (the input tensor's quantization)")
    return text + "." if spec else "The model's input as it is."


def _metadata_flatbuffer(fields: dict[str, Any]) -> bytes:
    """The ModelMetadata flatbuffer; slot numbers are the fields' order in metadata_schema.fbs."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def string(text):
        return b.CreateString(text) if text else None

    def table(slots: list[tuple[str, int, Any]]) -> int:
        """Offsets, bytes and unions' type bytes written into one table."""
        b.StartObject(max(slot for _, slot, _ in slots) + 1 if slots else 0)
        for kind, slot, value in slots:
            if value is None:
                continue
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "byte":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "uint":
                b.PrependUint32Slot(slot, value, 0)
        return b.EndObject()

    def vector_of_offsets(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    def floats(values: list[float]) -> int:
        return b.CreateNumpyVector(np.asarray(values, dtype="<f4"))

    source, out = fields["input"], fields["output"]
    # input tensor
    units = []
    if source["mean"] is not None:
        mean, std = floats(source["mean"]), floats(source["std"])
        options = table([("offset", 0, mean), ("offset", 1, std)])  # NormalizationOptions
        units.append(table([("byte", 0, _NORMALIZATION_OPTIONS), ("offset", 1, options)]))  # ProcessUnit
    process_units = vector_of_offsets(units) if units else None
    if source["image"]:
        size = table([("uint", 0, source["width"]), ("uint", 1, source["height"])])  # ImageSize
        properties = table([("byte", 0, _COLOR[source["color_space"]]), ("offset", 1, size)])
        content = table([("byte", 0, _IMAGE_PROPERTIES), ("offset", 1, properties)])
    else:
        content = table([("byte", 0, _FEATURE_PROPERTIES), ("offset", 1, table([]))])
    name, text = string(source["name"]), string(source["description"])
    input_tensor = table([("offset", 0, name), ("offset", 1, text), ("offset", 3, content),
                          ("offset", 4, process_units)])
    # output tensor
    files = None
    if fields["labels"]:
        file_name, file_text = string(LABELS_FILE), string("Class names, one per line, in output order.")
        files = vector_of_offsets([table([("offset", 0, file_name), ("offset", 1, file_text),
                                          ("byte", 2, TENSOR_AXIS_LABELS)])])  # AssociatedFile
    name, text = string(out["name"]), string(out["description"])
    output_content = table([("byte", 0, _FEATURE_PROPERTIES), ("offset", 1, table([]))])
    output_tensor = table([("offset", 0, name), ("offset", 1, text), ("offset", 3, output_content),
                           ("offset", 6, files)])
    inputs, outputs = vector_of_offsets([input_tensor]), vector_of_offsets([output_tensor])
    subgraph = table([("offset", 2, inputs), ("offset", 3, outputs)])  # SubGraphMetadata
    subgraphs = vector_of_offsets([subgraph])
    strings = [string(fields[k]) for k in ("name", "description", "version", "author", "license")]
    parser = string(MIN_PARSER_VERSION)
    root = table([("offset", 0, strings[0]), ("offset", 1, strings[1]), ("offset", 2, strings[2]),
                  ("offset", 3, subgraphs), ("offset", 4, strings[3]), ("offset", 5, strings[4]),
                  ("offset", 7, parser)])
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def _with_zip(content: bytes, files: dict[str, bytes]) -> bytes:
    """``content`` followed by a zip archive of ``files`` (stored, fixed timestamps): the
    layout tflite-support's populator writes, readable by any zip reader."""
    stream = io.BytesIO(content)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    return stream.getvalue()


def flatbuffer_part(content: bytes) -> bytes:
    """The model without a packed zip archive after it (the flatbuffer ignores trailing
    bytes, but a rewrite must not carry a stale archive along)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile:
        return content
    start = min((m.header_offset for m in members), default=len(content))
    return content[:start]


def packed_files(content: bytes) -> dict[str, bytes]:
    """The associated files packed after the model (none if there is no archive)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()}
    except zipfile.BadZipFile:
        return {}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


# --- reading the metadata back (what an app's wrapper reads) ---------------------------------

def read_metadata(content: bytes) -> dict[str, Any] | None:
    """The TFLITE_METADATA flatbuffer decoded into the fields an app reads, or None."""
    import flatbuffers

    model = read_model(flatbuffer_part(content))
    entry = next((m for m in model.metadata or [] if _text(m.name) == METADATA_NAME), None)
    if entry is None:
        return None
    blob = bytes(np.asarray(model.buffers[entry.buffer].data, dtype=np.uint8))
    if blob[4:8] != METADATA_IDENTIFIER:
        raise ValueError("the TFLITE_METADATA buffer is not a metadata flatbuffer (identifier)")

    class Reader:
        def __init__(self, position: int):
            self.table = flatbuffers.table.Table(bytearray(blob), position)

        def _field(self, slot: int) -> int:
            return self.table.Offset(4 + 2 * slot)

        def string(self, slot):
            at = self._field(slot)
            return self.table.String(at + self.table.Pos).decode() if at else None

        def byte(self, slot):
            at = self._field(slot)
            return self.table.Get(flatbuffers.number_types.Uint8Flags, at + self.table.Pos) if at else 0

        def uint(self, slot):
            at = self._field(slot)
            return self.table.Get(flatbuffers.number_types.Uint32Flags, at + self.table.Pos) if at else 0

        def child(self, slot):
            at = self._field(slot)
            return Reader(self.table.Indirect(at + self.table.Pos)) if at else None

        def children(self, slot):
            at = self._field(slot)
            if not at:
                return []
            start, count = self.table.Vector(at), self.table.VectorLen(at)
            return [Reader(self.table.Indirect(start + 4 * i)) for i in range(count)]

        def floats(self, slot):
            at = self._field(slot)
            if not at:
                return None
            start, count = self.table.Vector(at), self.table.VectorLen(at)
            return [float(v) for v in np.frombuffer(bytes(blob[start:start + 4 * count]), dtype="<f4")]

    root = Reader(flatbuffers.encode.Get(flatbuffers.packer.uoffset, bytearray(blob), 0))
    result = {"name": root.string(0), "description": root.string(1), "version": root.string(2),
              "author": root.string(4), "license": root.string(5), "min_parser_version": root.string(7)}
    graph = root.children(3)[0]

    def tensor(reader):
        found = {"name": reader.string(0), "description": reader.string(1)}
        content = reader.child(3)
        if content is not None and content.byte(0) == _IMAGE_PROPERTIES:
            image = content.child(1)
            size = image.child(1)
            found["image"] = {"color_space": {v: k for k, v in _COLOR.items()}[image.byte(0)],
                              "width": size.uint(0) if size else 0, "height": size.uint(1) if size else 0}
        for unit in reader.children(4):
            if unit.byte(0) == _NORMALIZATION_OPTIONS:
                options = unit.child(1)
                found["normalization"] = {"mean": options.floats(0), "std": options.floats(1)}
        found["associated_files"] = [{"name": f.string(0), "type": f.byte(2)} for f in reader.children(6)]
        return found

    result["inputs"] = [tensor(t) for t in graph.children(2)]
    result["outputs"] = [tensor(t) for t in graph.children(3)]
    return result
