"""The .tflite a microcontroller flashes: tensor names, signatures and metadata removed.

Every byte of a model in flash is a byte the application cannot use; TFLM never reads tensor
names, signature defs or the converter's metadata, so they go. Weight buffers are written
16-byte aligned (the schema asks for it with `force_align: 16`, which the Python object API
ignores): int32 biases and per-channel data are then safe to read on cores that fault on
unaligned loads. The integers are untouched; tests check TFLM gives the same outputs.
"""

from __future__ import annotations

from typing import Any

from toolkit.core.tflite_edit import TFLITE_IDENTIFIER

BUFFER_ALIGN = 16


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _aligned_buffer_class() -> type:
    schema = _schema()

    class AlignedBufferT(schema.BufferT):  # type: ignore[misc, name-defined]
        """A BufferT whose data vector starts on a 16-byte boundary of the finished file."""

        def Pack(self, builder: Any) -> int:
            data = None
            if self.data is not None and len(self.data):
                payload = bytes(bytearray(self.data))
                builder.StartVector(1, len(payload), BUFFER_ALIGN)
                builder.head -= len(payload)
                builder.Bytes[builder.head : builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def _metadata_bytes(model: Any) -> int:
    """Bytes the converter's metadata holds (its buffers and names)."""
    total = 0
    buffers = model.buffers or []
    for entry in model.metadata or []:
        total += len(entry.name or b"")
        if 0 <= entry.buffer < len(buffers) and buffers[entry.buffer].data is not None:
            total += len(buffers[entry.buffer].data)
    return total


def _signature_bytes(model: Any) -> int:
    total = 0
    for sig in model.signatureDefs or []:
        total += len(sig.signatureKey or b"")
        for entry in [*(sig.inputs or []), *(sig.outputs or [])]:
            total += len(entry.name or b"")
    return total


def _name_bytes(model: Any) -> int:
    return sum(len(t.name or b"") for g in model.subgraphs or [] for t in g.tensors or [])


def _load(content: bytes) -> Any:
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(content), 0))


def schema_floor(content: bytes) -> int:
    """The file size without tensor names, signatures and metadata payloads: what any writer
    of the same graph and weights must store (stripped files land within 1 % of it)."""
    model = _load(content)
    return len(content) - _name_bytes(model) - _metadata_bytes(model) - _signature_bytes(model)


def strip_model(content: bytes) -> bytes:
    """`content` without tensor names, subgraph names, signatures, description and metadata;
    buffers the metadata alone used are dropped and the rest renumbered."""
    import flatbuffers

    model = _load(content)
    buffers = list(model.buffers or [])
    used = {t.buffer for g in model.subgraphs or [] for t in g.tensors or []}
    keep = [i for i in range(len(buffers)) if i == 0 or i in used]  # buffer 0: the empty one
    renumber = {old: new for new, old in enumerate(keep)}
    aligned = _aligned_buffer_class()
    new_buffers = []
    for i in keep:
        buf = aligned()
        buf.data = buffers[i].data if i else None
        new_buffers.append(buf)
    model.buffers = new_buffers
    for graph in model.subgraphs or []:
        graph.name = None
        for tensor in graph.tensors or []:
            tensor.name = None
            tensor.buffer = renumber.get(tensor.buffer, 0)
    model.metadata = None
    model.metadataBuffer = None
    model.signatureDefs = None
    model.description = None
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def buffer_offsets(content: bytes) -> list[int]:
    """Byte offset in the file of every non-empty weight buffer (to check the alignment)."""
    schema = _schema()
    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    offsets = []
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            offsets.append(int(buf._tab.Vector(buf._tab.Offset(4))))  # the data field's slot
    return offsets
