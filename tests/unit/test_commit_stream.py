"""The CommitStream path in process: a serialized message in, the serialized response out
(``GroupCommitScheduler.submit_stream``), with the same guarantees as ``submit_many``."""

import asyncio
from pathlib import Path

import grpc
import pytest
from hlc_oracle import (
    Aborted,
    Clock,
    CommitOptions,
    Committed,
    GroupCommitScheduler,
    ManualClock,
    Timestamp,
    Transaction,
)
from hlc_oracle._core import decode_commit_results, encode_commit_request
from hlc_oracle.durable import ExternalDurableStep
from hlc_oracle.scheduler import CeilingRaised, StreamResult

# A Transaction of id 7 whose start_ts has a logical counter past its 12 bits: the Rust decoder
# takes the message, and the transaction gets its own INVALID_ARGUMENT result.
MALFORMED_START = bytes.fromhex("0a0a0807120608011080c002")


def _code(result: object) -> int:
    assert isinstance(result, tuple), result
    return int(result[1])


def test_a_message_is_decided_like_submit_many_with_per_transaction_errors(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        clock = Clock(node=1)
        options = CommitOptions(max_write_keys=2, max_key_bytes=8)
        with GroupCommitScheduler(tmp_path / "log", clock, options) as scheduler:
            start = clock.now()
            first = Transaction(1, start, [], [b"a"])
            assert isinstance(await scheduler.submit(first), Committed)
            next_seq = scheduler.stats()["next_seq"]
            refused_only = (
                encode_commit_request(
                    [
                        Transaction(2, start, [], [b"a", b"b", b"c"]),  # too many keys
                        Transaction(1, start, [], [b"other"]),  # 1 with other contents
                        Transaction(3, Timestamp(start.physical + 10**9), [], [b"x"]),  # future
                    ]
                )
                + MALFORMED_START
            )
            result = await scheduler.submit_stream(refused_only)
            assert (result.committed, result.aborted, result.refused) == (0, 0, 4)
            codes = [_code(r) for r in decode_commit_results(result.response)]
            assert codes == [
                grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                grpc.StatusCode.ALREADY_EXISTS.value[0],
                grpc.StatusCode.OUT_OF_RANGE.value[0],
                grpc.StatusCode.INVALID_ARGUMENT.value[0],
            ]
            assert scheduler.stats()["next_seq"] == next_seq, "nothing logged for refusals"

            later = clock.now()
            mixed = encode_commit_request(
                [
                    first,  # decided: its first decision
                    Transaction(4, start, [], [b"a"]),  # conflicts with 1
                    Transaction(5, later, [b"r"], [b"b"]),
                    Transaction(5, later, [b"r"], [b"b"]),  # repeated in the message
                ]
            )
            result = await scheduler.submit_stream(mixed)
            assert (result.committed, result.aborted, result.refused) == (3, 1, 0)
            one, four, five, five_again = decode_commit_results(result.response)
            assert one == await scheduler.submit(first)
            assert isinstance(four, Aborted) and four.conflict is not None
            assert four.conflict.key == b"a"
            assert isinstance(five, Committed) and five == five_again
            assert scheduler.status(5) == five
            # A requested abort fences a later commit of the id in a message.
            assert isinstance(await scheduler.abort(9), Aborted)
            fenced = await scheduler.submit_stream(
                encode_commit_request([Transaction(9, clock.now(), [], [b"z"])])
            )
            (nine,) = decode_commit_results(fenced.response)
            assert isinstance(nine, Aborted) and nine.reason == "requested"
            assert await scheduler.submit_stream(b"") == StreamResult(b"", 0, 0, 0)
            with pytest.raises(ValueError, match="malformed CommitStreamRequest"):
                await scheduler.submit_stream(b"\x0a\x05\x01")

    asyncio.run(run())


def test_messages_and_callers_together_survive_a_restart(tmp_path: Path) -> None:
    async def run() -> list[Committed]:
        clock = Clock(node=1)
        with GroupCommitScheduler(tmp_path / "log", clock) as scheduler:
            start = clock.now()
            messages = [
                encode_commit_request(
                    [Transaction(m * 100 + i, start, [], [b"%d/%d" % (m, i)]) for i in range(50)]
                )
                for m in range(1, 5)
            ]
            singles = [
                scheduler.submit(Transaction(1000 + i, start, [], [b"s%d" % i])) for i in range(20)
            ]
            answers = await asyncio.gather(
                *(scheduler.submit_stream(m) for m in messages), *singles
            )
            committed: list[Committed] = []
            for result in answers[:4]:
                assert isinstance(result, StreamResult) and result.committed == 50
                committed.extend(r for r in decode_commit_results(result.response))  # type: ignore[misc]
            assert all(isinstance(a, Committed) for a in answers[4:])
            return committed

    committed = asyncio.run(run())
    with GroupCommitScheduler(tmp_path / "log", Clock(node=1)) as reopened:
        assert all(reopened.status(c.txn_id) == c for c in committed)


def test_a_message_refused_at_the_ceiling_is_retried_once_it_is_raised(tmp_path: Path) -> None:
    async def run() -> None:
        physical = ManualClock(1_000_000)
        clock = Clock(node=1, physical_clock=physical, ceiling_physical=1_000_010)
        with GroupCommitScheduler(None, clock, CommitOptions(durability="memory")) as scheduler:
            raised: list[int] = []

            def raise_ceiling(done: CeilingRaised) -> None:
                raised.append(clock.raise_ceiling(physical.now_us() + 1_000_000))
                done(None)

            scheduler.on_ceiling = raise_ceiling
            start = clock.now()
            physical.advance(100)  # past the ceiling
            single = await scheduler.submit(Transaction(1, start, [], [b"a"]))
            assert isinstance(single, Committed) and raised
            physical.advance(2_000_000)  # past the raised ceiling
            result = await scheduler.submit_stream(
                encode_commit_request([Transaction(2, start, [], [b"b"])])
            )
            assert result.committed == 1 and len(raised) == 2

    asyncio.run(run())


def test_the_external_step_answers_messages_once_durable() -> None:
    async def run() -> None:
        stored: dict[int, bytes] = {}

        async def store(batch_seq: int, data: bytes) -> None:
            await asyncio.sleep(0.01)
            stored[batch_seq] = data

        step = ExternalDurableStep(store, asyncio.get_running_loop())
        clock = Clock(node=1)
        scheduler = GroupCommitScheduler(None, clock, durable_step=step)
        start = clock.now()
        message = (
            encode_commit_request([Transaction(i, start, [], [b"k%d" % i]) for i in range(1, 11)])
            + MALFORMED_START
        )
        result = await scheduler.submit_stream(message)
        assert (result.committed, result.refused) == (10, 1)
        assert stored, "answered after the store took the batch"
        assert scheduler.stats()["committed"] == 10
        await scheduler.aclose()

    asyncio.run(run())
