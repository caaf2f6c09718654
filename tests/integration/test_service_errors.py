"""Bad input over the wire: each gets a clear status and message, and the next request is served."""

from __future__ import annotations

import queue
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hlc_oracle import Timestamp
from hlc_oracle.client import OracleClient, OracleError
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.oracle_process import OracleProcess

METHOD = "/hlc_oracle.v1.TimestampOracle/"


@pytest.fixture
def channel(oracle: OracleProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(oracle.target) as channel:
        yield channel


def raw_call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.RpcError:
    """Sends ``payload`` as the request bytes of ``method``; returns the error it must raise."""
    call = channel.unary_unary(METHOD + method)
    with pytest.raises(grpc.RpcError) as raised:
        call(payload, timeout=5)
    return raised.value  # type: ignore[return-value]


def assert_still_serving(channel: grpc.Channel) -> None:
    call = channel.unary_unary(
        METHOD + "GetTimestamps",
        request_serializer=pb.GetTimestampsRequest.SerializeToString,
        response_deserializer=pb.GetTimestampsResponse.FromString,
    )
    response = call(pb.GetTimestampsRequest(count=3), timeout=5)
    assert response.count == 3
    assert response.first.physical > 0


def count_request(count: int) -> bytes:
    return pb.GetTimestampsRequest(count=count).SerializeToString()


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field: int, body: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(body)) + body


def raw_observe(physical: int, logical: int, node: int) -> bytes:
    """An ObserveRequest written by hand, so each field may hold any 64-bit value."""
    body = b"\x08" + varint(physical) + b"\x10" + varint(logical) + b"\x18" + varint(node)
    return length_delimited(1, body)


# What the protobuf parser reads without complaint but not as sent: a varint too wide for its
# uint32 field (truncated to the low 32 bits) and a known field with the wrong wire type (dropped
# as unknown). Each must be refused, naming the field, rather than served.
@pytest.mark.parametrize(
    ("method", "payload", "message"),
    [
        (
            "GetTimestamps",
            b"\x08" + varint(2**32 + 1),
            "GetTimestampsRequest.count is 4294967297, out of range for uint32",
        ),
        (
            "GetTimestamps",
            b"\x08" + varint(2**64 - 1),
            "GetTimestampsRequest.count is 18446744073709551615, out of range for uint32",
        ),
        (
            "Observe",
            raw_observe(5, 2**32 + 5, 1),
            "ObserveRequest.remote.logical is 4294967301, out of range for uint32",
        ),
        (
            "Observe",
            raw_observe(5, 1, 2**32 + 7),
            "ObserveRequest.remote.node is 4294967303, out of range for uint32",
        ),
        (
            "GetTimestamps",
            length_delimited(1, b"abc"),
            "GetTimestampsRequest.count (field 1) arrived with wire type 2 (length-delimited); "
            "a uint32 is sent as wire type 0 (varint)",
        ),
        (
            "GetTimestamps",
            b"\x0d\x05\x00\x00\x00",
            "GetTimestampsRequest.count (field 1) arrived with wire type 5 (32-bit)",
        ),
        (
            "Observe",
            length_delimited(1, length_delimited(2, b"\x05")),
            "ObserveRequest.remote.logical (field 2) arrived with wire type 2 (length-delimited)",
        ),
        (
            "Observe",
            b"\x08\x05",
            "ObserveRequest.remote (field 1) arrived with wire type 0 (varint); "
            "a message is sent as wire type 2",
        ),
    ],
)
def test_value_the_parser_would_truncate_or_drop_is_refused(
    channel: grpc.Channel, method: str, payload: bytes, message: str
) -> None:
    error = raw_call(channel, method, payload)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert message in (error.details() or ""), error.details()
    assert_still_serving(channel)


def test_unknown_fields_are_still_ignored(channel: grpc.Channel) -> None:
    # Field 15 (unknown) of every wire type around a valid count: served as count 4.
    payload = b"\x78\x01" + length_delimited(15, b"xy") + b"\x7d\x00\x00\x00\x00\x08\x04"
    call = channel.unary_unary(METHOD + "GetTimestamps")
    response = pb.GetTimestampsResponse.FromString(call(payload, timeout=5))
    assert response.count == 4


def test_oversized_count_on_a_stream_ends_it_with_invalid_argument(channel: grpc.Channel) -> None:
    stream = channel.stream_stream(METHOD + "StreamTimestamps")
    responses = stream(iter([count_request(2), b"\x08" + varint(2**32 + 1)]), timeout=5)
    assert pb.GetTimestampsResponse.FromString(next(responses)).count == 2
    with pytest.raises(grpc.RpcError) as raised:
        next(responses)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "count is 4294967297" in (raised.value.details() or "")  # type: ignore[attr-defined]
    assert_still_serving(channel)


@pytest.mark.parametrize(
    ("method", "payload", "code", "message"),
    [
        ("GetTimestamps", count_request(0), "INVALID_ARGUMENT", "count must be at least 1, got 0"),
        ("GetTimestamps", b"", "INVALID_ARGUMENT", "count must be at least 1, got 0"),
        (
            "GetTimestamps",
            count_request(2**32 - 1),
            "RESOURCE_EXHAUSTED",
            "count 4294967295 is above the server's limit max_count=1000000",
        ),
        (
            "GetTimestamps",
            count_request(1_000_001),
            "RESOURCE_EXHAUSTED",
            "max_count=1000000",
        ),
        # Garbage, a truncated varint, a truncated length-delimited field.
        (
            "GetTimestamps",
            b"\xff\xff\xff\xff",
            "INVALID_ARGUMENT",
            "malformed GetTimestampsRequest",
        ),
        ("GetTimestamps", b"\x08\x80", "INVALID_ARGUMENT", "malformed GetTimestampsRequest"),
        ("Observe", b"\x0a\x05\x08\x01", "INVALID_ARGUMENT", "malformed ObserveRequest"),
        ("GetStatus", b"\x0a\xff", "INVALID_ARGUMENT", "malformed GetStatusRequest"),
        ("Observe", b"", "INVALID_ARGUMENT", "ObserveRequest.remote is required"),
        (
            "Observe",
            pb.ObserveRequest(remote=pb.Timestamp(physical=5, logical=4096)).SerializeToString(),
            "INVALID_ARGUMENT",
            "malformed remote timestamp: logical must be in 0..=4095, got 4096",
        ),
        (
            "Observe",
            pb.ObserveRequest(remote=pb.Timestamp(physical=5, node=70_000)).SerializeToString(),
            "INVALID_ARGUMENT",
            "node must be in 0..=65535",
        ),
        (
            "Observe",
            pb.ObserveRequest(remote=pb.Timestamp(physical=2**60)).SerializeToString(),
            "INVALID_ARGUMENT",
            "malformed remote timestamp: physical",
        ),
    ],
)
def test_bad_request_gets_status_and_server_keeps_serving(
    channel: grpc.Channel, method: str, payload: bytes, code: str, message: str
) -> None:
    error = raw_call(channel, method, payload)
    assert error.code().name == code, error.details()
    assert message in (error.details() or "")
    assert_still_serving(channel)


def test_message_over_the_size_limit(start_oracle: Callable[..., OracleProcess]) -> None:
    # Valid protobuf (an unknown bytes field pads it) but over limits.max_message_bytes (64 KiB
    # here). Field 15, length-delimited, 100,000 bytes (varint a0 8d 06).
    server = start_oracle("--max-message-bytes", "65536")
    padded = count_request(1) + b"\x7a\xa0\x8d\x06" + bytes(100_000)
    with grpc.insecure_channel(server.target) as channel:
        error = raw_call(channel, "GetTimestamps", padded)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (error.details() or "")
        assert_still_serving(channel)


def test_wrong_wire_type_is_not_taken_as_a_count(channel: grpc.Channel) -> None:
    # Field 1 (count) sent as a length-delimited string: refused as such, not as "count 0".
    error = raw_call(channel, "GetTimestamps", b"\x0a\x03abc")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wire type 2" in (error.details() or "")
    assert "got 0" not in (error.details() or "")
    assert_still_serving(channel)


def test_remote_timestamp_from_far_in_the_future_is_out_of_range(oracle: OracleProcess) -> None:
    with OracleClient(oracle.target) as client:
        before = client.status().last_timestamp
        future = Timestamp(int(time.time() * 1e6) + 3_600_000_000, 0, 4)
        with pytest.raises(OracleError) as raised:
            client.observe(future)
        assert raised.value.code == grpc.StatusCode.OUT_OF_RANGE
        assert "more than max_offset_us=500000" in raised.value.details
        # The clock did not jump to the far future.
        after = client.get_timestamp()
        assert after > before
        assert after.physical < future.physical - 3_000_000_000


def test_bad_message_on_a_stream_ends_it_with_a_status(channel: grpc.Channel) -> None:
    stream = channel.stream_stream(METHOD + "StreamTimestamps")
    responses = stream(iter([count_request(2), count_request(0)]), timeout=5)
    first = pb.GetTimestampsResponse.FromString(next(responses))
    assert first.count == 2
    with pytest.raises(grpc.RpcError) as raised:
        next(responses)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert_still_serving(channel)


def test_stream_answers_in_request_order(channel: grpc.Channel) -> None:
    counts = [1, 5, 1000, 2, 77, 1, 3000]
    stream = channel.stream_stream(METHOD + "StreamTimestamps")
    responses = [
        pb.GetTimestampsResponse.FromString(raw)
        for raw in stream(iter(count_request(c) for c in counts), timeout=5)
    ]
    assert [r.count for r in responses] == counts
    firsts = [(r.first.physical << 12) | r.first.logical for r in responses]
    assert all(
        prev + r.count <= nxt for prev, r, nxt in zip(firsts, responses, firsts[1:], strict=False)
    )


def test_garbage_bytes_on_the_port(oracle: OracleProcess, channel: grpc.Channel) -> None:
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 8, b"PRI * HTTP/2"):
        with socket.create_connection(("127.0.0.1", oracle.port), timeout=5) as sock:
            sock.sendall(garbage)
            sock.settimeout(2)
            try:
                while sock.recv(4096):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    assert_still_serving(channel)


def test_unavailable_and_not_serving_during_shutdown(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    server = start_oracle("--shutdown-grace", "3")
    with grpc.insecure_channel(server.target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="hlc_oracle.v1.TimestampOracle"), timeout=10
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        sent: queue.Queue[bytes | None] = queue.Queue()
        sent.put(count_request(1))

        def request_iterator() -> Iterator[bytes]:
            while True:
                item = sent.get()
                if item is None:
                    return
                yield item

        stream = channel.stream_stream(METHOD + "StreamTimestamps")(request_iterator(), timeout=10)
        assert pb.GetTimestampsResponse.FromString(next(stream)).count == 1
        server.signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # The open stream is in flight: it gets UNAVAILABLE with the gate's reason.
        sent.put(count_request(1))
        with pytest.raises(grpc.RpcError) as raised:
            next(stream)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert "shutting down" in (raised.value.details() or "")  # type: ignore[attr-defined]
        sent.put(None)
        watch.cancel()
    assert server.process is not None
    assert server.process.wait(timeout=20) == 0
    assert '"message": "stopped"' in server.log_text()


def test_concurrent_rpc_limit_answers_resource_exhausted(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    server = start_oracle("--set", "limits.max_concurrent_rpcs=2")
    with grpc.insecure_channel(server.target) as channel:
        method = channel.stream_stream(METHOD + "StreamTimestamps")
        gates: list[queue.Queue[bytes | None]] = [queue.Queue() for _ in range(3)]

        def requests(gate: queue.Queue[bytes | None]) -> Iterator[bytes]:
            while (item := gate.get()) is not None:
                yield item

        # The server counts a call from the moment its headers arrive, so each stream is opened
        # only after the one before it was answered: the third is then the one over the limit.
        streams: list[Any] = []
        try:
            for gate in gates[:2]:
                streams.append(method(requests(gate), timeout=10))
                gate.put(count_request(1))
                assert pb.GetTimestampsResponse.FromString(next(streams[-1])).count == 1
            # Two streams are open: the third call is over the limit.
            streams.append(method(requests(gates[2]), timeout=10))
            gates[2].put(count_request(1))
            with pytest.raises(grpc.RpcError) as raised:
                next(streams[2])
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        finally:
            for gate in gates:
                gate.put(None)
            for stream in streams:
                stream.cancel()
        # Once they are closed, calls are served again.
        deadline = time.monotonic() + 10
        while True:
            try:
                assert_still_serving(channel)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
