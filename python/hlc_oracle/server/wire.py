"""What the protobuf parser lets through silently: integers too wide for their field, and known
fields sent with the wrong wire type.

The parser truncates a varint to the field's width (``count`` sent as 2**32 + 1 reads as 1) and
files a known field that arrives with another wire type among the unknown fields (``count`` sent
as a string reads as 0). :func:`check_wire` walks the raw bytes of a message the parser accepted,
with the message's descriptor, and reports either case naming the field, so the handler can answer
``INVALID_ARGUMENT`` instead of serving a number the client never sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import Descriptor, FieldDescriptor

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = range(6)
WIRE_TYPE_NAMES = {
    VARINT: "varint",
    FIXED64: "64-bit",
    LENGTH_DELIMITED: "length-delimited",
    START_GROUP: "start-group",
    END_GROUP: "end-group",
    FIXED32: "32-bit",
}

_F = FieldDescriptor
# Field type -> (wire type, name, largest varint value accepted as-is).
_U32 = 2**32 - 1
_U64 = 2**64 - 1
FIELD_TYPES: dict[int, tuple[int, str, int | None]] = {
    _F.TYPE_UINT32: (VARINT, "uint32", _U32),
    _F.TYPE_SINT32: (VARINT, "sint32", _U32),
    _F.TYPE_UINT64: (VARINT, "uint64", _U64),
    _F.TYPE_INT64: (VARINT, "int64", _U64),
    _F.TYPE_SINT64: (VARINT, "sint64", _U64),
    _F.TYPE_INT32: (VARINT, "int32", None),  # sign-extended to 64 bits: checked apart
    _F.TYPE_ENUM: (VARINT, "enum", None),
    _F.TYPE_BOOL: (VARINT, "bool", _U64),
    _F.TYPE_FIXED64: (FIXED64, "fixed64", None),
    _F.TYPE_SFIXED64: (FIXED64, "sfixed64", None),
    _F.TYPE_DOUBLE: (FIXED64, "double", None),
    _F.TYPE_FIXED32: (FIXED32, "fixed32", None),
    _F.TYPE_SFIXED32: (FIXED32, "sfixed32", None),
    _F.TYPE_FLOAT: (FIXED32, "float", None),
    _F.TYPE_STRING: (LENGTH_DELIMITED, "string", None),
    _F.TYPE_BYTES: (LENGTH_DELIMITED, "bytes", None),
    _F.TYPE_MESSAGE: (LENGTH_DELIMITED, "message", None),
    _F.TYPE_GROUP: (START_GROUP, "group", None),
}


class WireCheckError(ValueError):
    """A field the parser accepted but would have read as something the client did not send."""


class _Reader:
    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.position = start
        self.end = len(data) if end is None else end

    def at_end(self) -> bool:
        return self.position >= self.end

    def varint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            if self.position >= self.end:
                raise WireCheckError("truncated varint")
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise WireCheckError("varint longer than 10 bytes")

    def skip(self, n: int) -> None:
        if self.position + n > self.end:
            raise WireCheckError("truncated field")
        self.position += n


def _in_range(kind: int, value: int) -> bool:
    if kind in (_F.TYPE_INT32, _F.TYPE_ENUM):
        # Negative values arrive sign-extended to 64 bits.
        return value < 2**31 or 2**64 - 2**31 <= value <= _U64
    limit = FIELD_TYPES[kind][2]
    return limit is None or value <= limit


def _fields(descriptor: Descriptor | None) -> Mapping[int, FieldDescriptor]:
    return descriptor.fields_by_number if descriptor is not None else {}


def _check(
    reader: _Reader, fields: Mapping[int, FieldDescriptor], path: str, group: int | None = None
) -> None:
    while not reader.at_end():
        key = reader.varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == END_GROUP:
            if group == number:
                return
            raise WireCheckError(f"{path}: unexpected end-group of field {number}")
        field = fields.get(number)
        name = f"{path}.{field.name}" if field is not None else ""
        if field is not None:
            expected, type_name, _ = FIELD_TYPES[field.type]
            packed = field.is_repeated and expected != LENGTH_DELIMITED and expected != START_GROUP
            if wire_type != expected and not (packed and wire_type == LENGTH_DELIMITED):
                raise WireCheckError(
                    f"{name} (field {number}) arrived with wire type {wire_type} "
                    f"({WIRE_TYPE_NAMES.get(wire_type, 'invalid')}); a {type_name} is sent as "
                    f"wire type {expected} ({WIRE_TYPE_NAMES[expected]})"
                )
        if wire_type == VARINT:
            value = reader.varint()
            if field is not None and not _in_range(field.type, value):
                _, type_name, limit = FIELD_TYPES[field.type]
                bound = f" (at most {limit})" if limit is not None else ""
                raise WireCheckError(f"{name} is {value}, out of range for {type_name}{bound}")
        elif wire_type == FIXED64:
            reader.skip(8)
        elif wire_type == FIXED32:
            reader.skip(4)
        elif wire_type == LENGTH_DELIMITED:
            length = reader.varint()
            start = reader.position
            reader.skip(length)
            if field is not None and field.type == _F.TYPE_MESSAGE:
                _check(
                    _Reader(reader.data, start, start + length), _fields(field.message_type), name
                )
        elif wire_type == START_GROUP:
            if field is not None and field.type == _F.TYPE_GROUP:
                _check(reader, _fields(field.message_type), name, group=number)
            else:
                _check(reader, {}, name or f"{path}.<field {number}>", group=number)
        else:
            raise WireCheckError(f"{path}: invalid wire type {wire_type} on field {number}")
    if group is not None:
        raise WireCheckError(f"{path}: group of field {group} is not closed")


def check_wire(raw: bytes, descriptor: Descriptor) -> None:
    """Raises :class:`WireCheckError` naming the field when ``raw`` (a serialized message of
    ``descriptor``'s type, already accepted by the parser) holds an integer too wide for its field
    or a known field with the wrong wire type; unknown fields are skipped."""
    _check(_Reader(raw), _fields(descriptor), descriptor.name)
