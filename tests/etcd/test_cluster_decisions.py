"""The decision log on a real etcd: group commit through the fenced etcd store, recovery by the
next leader, a deposed leader's pieces refused, retention, the quota alarm, a bad key at
recovery, and a three-member etcd losing its raft leader under load."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from hlc_oracle import (
    Aborted,
    Clock,
    CommitEngine,
    CommitLogError,
    CommitOutcomeUnknownError,
    Committed,
    StartTimestampError,
    Transaction,
)
from hlc_oracle.cluster.decisions import (
    Checkpoint,
    DecisionDecodeError,
    DecisionLog,
    DecisionQuotaError,
    decision_key,
    decisions_range,
    parse_decision_key,
)
from hlc_oracle.cluster.etcd import (
    EtcdError,
    EtcdQuotaError,
    delete,
)
from hlc_oracle.cluster.fence import FenceError

from tests.support.decision_leader import (
    EMPTY_PIECE,
    LEADER_KEY,
    PREFIX,
    Leader,
    Outcome,
    client_of,
    run,
    take_leadership,
    transactions,
)
from tests.support.etcd_process import EtcdCluster, EtcdMember


def test_decisions_survive_into_the_next_term(etcd: EtcdMember) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        first, _ = await Leader.promote(client, 1, page_keys=3)  # small pages: paged recovery
        txns = transactions(first.scheduler.clock, 1, 200)
        answers = await first.commit(txns)
        assert all(isinstance(a, Committed | Aborted) for a in answers), answers
        assert sum(isinstance(a, Committed) for a in answers) > 20
        await first.scheduler.aclose()
        newest = await first.log.newest_seq()
        assert newest >= 1

        second, recovered = await Leader.promote(client, 2, page_keys=3)
        assert recovered.newest_seq == newest and recovered.pieces >= 1
        assert recovered.commits + recovered.aborts == len(answers)
        for n, answer in enumerate(answers, start=1):
            assert second.scheduler.status(n) == answer
        newest_commit = max(a.commit_ts for a in answers if isinstance(a, Committed))
        assert second.scheduler.clock.now() > newest_commit
        # Resubmitting a decided id gets its first decision; new commits continue the seq.
        again = await second.commit(txns[:5])
        assert again == answers[:5]
        fresh = await second.commit(transactions(second.scheduler.clock, 1000, 3))
        assert all(isinstance(a, Committed) for a in fresh)
        assert await second.log.newest_seq() > newest
        await second.scheduler.aclose()

    run(scenario)


def test_a_new_leaders_history_loads_newest_first_without_its_own_terms_pieces(
    etcd: EtcdMember,
) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        first, _ = await Leader.promote(client, 1)
        for n in range(12):  # a piece each
            await first.commit(transactions(first.scheduler.clock, 1 + 10 * n, 10))
        await first.scheduler.aclose()
        second, _ = await Leader.promote(client, 2)
        await second.commit(transactions(second.scheduler.clock, 1000, 5))  # this term's
        stored = await client.range(*decisions_range(PREFIX))
        earlier = [parse_decision_key(PREFIX, kv.key) for kv in stored.kvs]
        earlier = [key for key in earlier if key[0] == first.log.epoch]
        assert len(earlier) >= 12
        for page_keys in (1, 3, 256):
            log = DecisionLog(client, PREFIX, second.log.fence, page_keys=page_keys)
            seen: list[int] = []
            engine = CommitEngine(None, Clock(node=3), durability="external")

            def replay(
                page: list[tuple[int, bytes]],
                into: list[int] = seen,
                engine: CommitEngine = engine,
            ) -> tuple[int, int, tuple[int, str] | None]:
                into.extend(seq for seq, _ in page)
                return engine.replay_pieces(page)

            recovered = await log.load_history(None, replay, newest_first=True)
            assert seen == [seq for _, seq in reversed(earlier)], page_keys
            assert recovered.pieces == len(earlier)
            assert engine.status(1) == second.scheduler.status(1)
        await second.scheduler.aclose()

    run(scenario)


def test_a_deposed_leaders_pending_piece_is_refused_and_nothing_is_acknowledged(
    etcd: EtcdMember,
) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        old, _ = await Leader.promote(client, 1)
        failures: list[str] = []
        old.step.on_failure = failures.append
        acknowledged = await old.commit(transactions(old.scheduler.clock, 1, 20))
        # Another node wins while the old one still believes it leads.
        await take_leadership(client, "node-2")
        late = await old.commit(transactions(old.scheduler.clock, 100, 20, keys=1000))
        assert all(isinstance(a, CommitOutcomeUnknownError) for a in late), late
        assert failures and "FenceError" in failures[0] and "refused by the fence" in failures[0]
        await old.scheduler.aclose()
        # Nothing of the late batch reached etcd: a new engine knows only the first answers.
        engine = CommitEngine(None, Clock(node=3), durability="external")
        fence = await take_leadership(client, "node-3")
        log = DecisionLog(client, PREFIX, fence)
        await log.recover(None, engine.raise_low_watermark, engine.replay_pieces)
        assert [engine.status(n) for n in range(1, 21)] == acknowledged
        assert all(engine.status(n) is None for n in range(100, 120))

    run(scenario)


def test_retention_trims_old_pieces_moves_the_checkpoint_and_compacts(etcd: EtcdMember) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        now = [1000.0]
        leader, _ = await Leader.promote(client, 1, retention_s=60.0, now=lambda: now[0])
        old = await leader.commit(transactions(leader.scheduler.clock, 1, 10, keys=1000))
        await leader.scheduler.abort(50)  # an abort by id: its key goes with its piece
        old_seq = await leader.log.newest_seq()
        now[0] += 61
        recent = await leader.commit(transactions(leader.scheduler.clock, 100, 10, keys=1000))
        await leader.scheduler.abort(150)
        assert await leader.log.aborted_ids() == [50, 150]
        assert await leader.log.trim() >= 1  # the old pieces; the recent ones stay
        assert await leader.log.aborted_ids() == [150]
        start = decision_key(PREFIX, 0, 0)
        page = await client.range(start, decision_key(PREFIX, 2**63, 0))
        seqs = [int(kv.key.rsplit(b"/", 1)[1]) for kv in page.kvs]
        assert seqs and min(seqs) > old_seq
        checkpoint, _ = await client.get(f"{PREFIX}checkpoint".encode())
        assert checkpoint is not None and json.loads(checkpoint.value)["seq"] == min(seqs)
        revision_of_first_trim = (await client.get(LEADER_KEY))[1]
        now[0] += 61
        assert await leader.log.trim() >= 1  # everything; compacts up to the first trim
        with pytest.raises(Exception, match="compacted"):
            await client.range(start, start + b"\xff", revision=revision_of_first_trim - 1)
        await leader.scheduler.aclose()

        successor, recovered = await Leader.promote(client, 2)
        assert recovered.pieces == 0 and recovered.newest_seq >= max(seqs)
        # A trimmed id's status is unknown to the next leader.
        assert all(successor.scheduler.status(n) is None for n in range(1, 11))
        assert all(successor.scheduler.status(n) is None for n in range(100, 110))
        assert old and recent
        await successor.scheduler.aclose()

    run(scenario)


def test_a_trimmed_commit_resubmitted_to_the_next_leader_is_refused_never_decided_again(
    etcd: EtcdMember,
) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        now = [1000.0]
        leader, _ = await Leader.promote(client, 1, retention_s=60.0, now=lambda: now[0])
        txns = transactions(leader.scheduler.clock, 1, 10, keys=1000)
        answers = await leader.commit(txns)
        assert all(isinstance(a, Committed) for a in answers), answers
        now[0] += 61
        assert await leader.log.trim() >= 1
        checkpoint = await leader.log.read_checkpoint()
        assert checkpoint is not None and checkpoint.forgotten_through is not None
        assert checkpoint.forgotten_through >= max(t.start_ts for t in txns)
        await leader.scheduler.aclose()
        newest = await leader.log.newest_seq()

        successor, recovered = await Leader.promote(client, 2)
        assert recovered.pieces == 0
        assert successor.scheduler.engine.low_watermark == checkpoint.forgotten_through
        # The trimmed commit's resubmission: refused (OUT_OF_RANGE), never aborted or committed
        # again; its status stays unknown and nothing reaches etcd.
        again = await successor.commit(txns[:3])
        assert all(isinstance(a, StartTimestampError) for a in again), again
        assert "at or below" in str(again[0]) and str(txns[0].txn_id) in str(again[0])
        assert all(successor.scheduler.status(t.txn_id) is None for t in txns)
        assert await successor.log.newest_seq() == newest
        # Transactions that start after the trim still commit.
        fresh = await successor.commit(transactions(successor.scheduler.clock, 100, 3, keys=1000))
        assert all(isinstance(a, Committed) for a in fresh), fresh
        await successor.scheduler.aclose()

        # A checkpoint written before the bound was stored still reads (the old caveat holds).
        await client.put(
            f"{PREFIX}checkpoint".encode(), json.dumps({"epoch": 1, "seq": newest + 1}).encode()
        )
        third, recovered = await Leader.promote(client, 3)
        legacy = await third.log.read_checkpoint()
        assert legacy is not None and legacy.forgotten_through is None
        assert recovered.pieces >= 1  # the fresh pieces, after the checkpoint
        assert all(third.scheduler.status(t.txn_id) is None for t in txns)
        await third.scheduler.aclose()

    run(scenario)


def test_a_checkpoint_that_does_not_decode_stops_the_promotion_naming_it(
    etcd: EtcdMember,
) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        key = f"{PREFIX}checkpoint".encode()
        await client.put(key, b'{"epoch": 1, "seq": 2, "forgotten_through": "soon"}')
        with pytest.raises(DecisionDecodeError, match="checkpoint"):
            await Leader.promote(client, 1)
        await client.delete(key)

    run(scenario)


def test_a_key_that_does_not_decode_stops_the_promotion_naming_it(etcd: EtcdMember) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        bad_key = f"{PREFIX}decisions/not-a-number".encode()
        await client.put(bad_key, b"x")
        with pytest.raises(DecisionDecodeError, match="decisions/not-a-number"):
            await Leader.promote(client, 1)
        await client.delete(bad_key)
        torn = decision_key(PREFIX, 5, 7)
        await client.put(torn, b"\x01\x05\x00")
        with pytest.raises(DecisionDecodeError, match=f"{torn.decode()}.*does not decode"):
            await Leader.promote(client, 1)

    run(scenario)


def test_the_quota_alarm_refuses_pieces_and_nothing_unwritten_is_acknowledged(
    tmp_path: Path,
) -> None:
    async def scenario(member: EtcdMember) -> None:
        client = client_of([member.endpoint])
        leader, _ = await Leader.promote(client, 1)
        failures: list[str] = []
        leader.step.on_failure = failures.append
        clock = leader.scheduler.clock
        acknowledged: dict[int, Outcome] = {}
        refused = 0
        for round_ in range(200):
            # Pieces are small (no write sets): filler keys beside them bring the quota near.
            with contextlib.suppress(EtcdQuotaError):
                await client.put(f"/filler/{round_}".encode(), bytes(64 << 10))
            txns = [
                Transaction(round_ * 100 + n, clock.now(), [], [f"{round_}-{n}".encode()])
                for n in range(1, 40)
            ]
            for txn, answer in zip(txns, await leader.commit(txns), strict=True):
                if isinstance(answer, Committed | Aborted):
                    acknowledged[txn.txn_id] = answer
                else:
                    assert isinstance(answer, CommitOutcomeUnknownError), answer
                    refused += 1
            if failures:
                break
        assert refused and failures and "database space exceeded" in failures[0]
        assert await leader.log.quota_alarm()
        with pytest.raises(DecisionQuotaError, match="NOSPACE"):
            await leader.log.write(10**6, EMPTY_PIECE)
        await leader.scheduler.aclose()
        # etcd refuses every put now, a campaign's too: read back under the old term's fence.
        engine = CommitEngine(None, Clock(node=2), durability="external")
        log = DecisionLog(client, PREFIX, leader.log.fence)
        await log.recover(None, engine.raise_low_watermark, engine.replay_pieces)
        assert acknowledged
        for txn_id, answer in acknowledged.items():
            assert engine.status(txn_id) == answer

    with EtcdMember(tmp_path / "etcd", extra_args=("--quota-backend-bytes=2097152",)) as member:
        run(lambda: scenario(member))


def test_three_member_etcd_losing_its_raft_leader_under_load(etcd_cluster: EtcdCluster) -> None:
    """Waves of concurrent commits while etcd's raft leader is killed: every acknowledged
    decision reads back on the next leader; a batch whose write was lost with the raft leader is
    answered outcome unknown, and later ones are refused (the engine stopped): UNAVAILABLE both,
    never a guess."""

    async def scenario() -> None:
        client = client_of(etcd_cluster.endpoints)
        leader, _ = await Leader.promote(client, 1)
        clock = leader.scheduler.clock
        victim = etcd_cluster.raft_leader()
        decided: dict[int, Outcome] = {}
        unavailable = 0
        for wave in range(30):
            if wave == 10:
                asyncio.get_running_loop().call_later(0.002, victim.kill)
            txns = transactions(clock, wave * 1000 + 1, 50, keys=100_000)
            for txn, answer in zip(txns, await leader.commit(txns), strict=True):
                if isinstance(answer, Outcome):
                    decided[txn.txn_id] = answer
                else:
                    assert isinstance(answer, CommitLogError), answer  # unknown, or stopped
                    unavailable += 1
        await leader.scheduler.aclose()
        assert not victim.running()
        # A write sent as the raft leader died may go unanswered for a deadline: try again.
        for _ in range(5):
            try:
                fence = await take_leadership(client, "node-2")
                break
            except EtcdError:
                continue
        engine = CommitEngine(None, Clock(node=2), durability="external")
        log = DecisionLog(client, PREFIX, fence)
        await log.recover(None, engine.raise_low_watermark, engine.replay_pieces)
        assert len(decided) >= 500, (len(decided), unavailable)
        for txn_id, answer in decided.items():
            assert engine.status(txn_id) == answer

    run(scenario)


def test_delete_of_the_leader_key_alone_ends_the_term(etcd: EtcdMember) -> None:
    """The fence compares the leader key's value and create revision: deleting it is enough."""

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        fence = await take_leadership(client, "node-1")
        log = DecisionLog(client, PREFIX, fence)
        await log.write(1, EMPTY_PIECE)
        await client.txn([], [delete(LEADER_KEY)])
        with pytest.raises(FenceError, match="decision batch 2"):
            await log.write(2, EMPTY_PIECE)

    run(scenario)


def test_recovery_pages_stay_under_the_grpc_message_limit(etcd: EtcdMember) -> None:
    """Pieces of up to 1 MiB: a page of many would pass gRPC's 4 MiB receive limit; recovery
    reads fewer keys a page then, and still replays every piece."""

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        first, _ = await Leader.promote(client, 1)
        clock = first.scheduler.clock
        big = [
            Transaction(n, clock.now(), [], [b"%d-%d-" % (n, k) + b"v" * 3900 for k in range(200)])
            for n in range(1, 13)
        ]
        answers = await first.commit(big)
        assert all(isinstance(a, Committed) for a in answers), answers
        await first.scheduler.aclose()
        second, recovered = await Leader.promote(client, 2)
        assert recovered.commits == len(big)
        assert [second.scheduler.status(n) for n in range(1, 13)] == answers
        await second.scheduler.aclose()

    run(scenario)


def test_the_newest_seq_from_the_previous_epoch_matches_the_full_read(etcd: EtcdMember) -> None:
    """A new leader looks for the newest piece in the previous leader's epoch (two short reads)
    and checks it is the newest of all; whatever the hint, the answer is the full read's: the
    hinted epoch wrote it, wrote nothing, wrote before a later term, or left a gap."""

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        fence = await take_leadership(client, "reader")
        log = DecisionLog(client, PREFIX, fence)

        async def both(hint: int) -> tuple[int, int]:
            return await log.newest_seq(hint), await log.newest_seq()

        for seq in range(1, 6):
            await client.put(decision_key(PREFIX, 10, seq), EMPTY_PIECE)
        for seq in range(6, 10):
            await client.put(decision_key(PREFIX, 20, seq), EMPTY_PIECE)
        assert await both(20) == (9, 9)  # the hinted epoch wrote the newest
        assert await both(10) == (9, 9)  # a later term wrote after it
        assert await both(15) == (9, 9)  # the hinted epoch wrote nothing
        await client.delete(decision_key(PREFIX, 20, 7))
        assert await both(20) == (9, 9)  # a gap in the hinted epoch's seqs
        await client.delete(decision_key(PREFIX, 20, 9))
        assert await both(20) == (8, 8)
        await client.close()

    run(scenario)


def test_a_history_whose_newest_term_is_known_loads_the_same_pieces_without_listing_them_first(
    etcd: EtcdMember,
) -> None:
    """When the takeover found the newest pieces in the previous term (consecutive seqs), their
    keys are not listed: they are read first, then the older keys are listed and read. The
    pieces replayed, and their order, are those of a history whose keys are all listed first,
    with or without a checkpoint inside either term, for any page size."""

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        for seq in range(1, 6):
            await client.put(decision_key(PREFIX, 10, seq), EMPTY_PIECE)
        for seq in range(6, 14):
            await client.put(decision_key(PREFIX, 20, seq), EMPTY_PIECE)
        for n in range(20):  # the next term's epoch (a revision) comes after both
            await client.put(f"{PREFIX}filler".encode(), b"%d" % n)
        fence = await take_leadership(client, "reader")
        assert fence.term.epoch > 20

        async def replayed(log: DecisionLog, checkpoint: Checkpoint | None) -> list[int]:
            seen: list[int] = []

            def replay(page: list[tuple[int, bytes]]) -> tuple[int, int, None]:
                seen.extend(seq for seq, _ in page)
                return 0, 0, None

            recovered = await log.load_history(checkpoint, replay, newest_first=True)
            assert recovered.pieces == len(seen)
            return seen

        for page_keys in (1, 3, 256):
            for checkpoint in (None, Checkpoint(20, 9), Checkpoint(10, 3)):
                known = DecisionLog(client, PREFIX, fence, page_keys=page_keys)
                assert await known.newest_seq(20) == 13
                assert known.newest_term == (20, 6, 13)
                listed = DecisionLog(client, PREFIX, fence, page_keys=page_keys)
                assert listed.newest_term is None
                expected = [
                    s for s in range(13, 0, -1) if checkpoint is None or s >= checkpoint.seq
                ]
                assert await replayed(known, checkpoint) == expected, (page_keys, checkpoint)
                assert await replayed(listed, checkpoint) == expected, (page_keys, checkpoint)
        # A hint that does not hold (a later term wrote after it) leaves the keys to the listing.
        assert await known.newest_seq(10) == 13 and known.newest_term is None
        await client.close()

    run(scenario)


def test_a_piece_write_waits_out_an_etcd_that_answers_after_the_clients_timeout(
    etcd: EtcdMember,
) -> None:
    """etcd stalled past the client's 1 s deadline (a starved host, a defragmentation): the
    piece's fenced write, idempotent, waits for its answer, and the batch commits instead of
    ending as unknown outcomes."""

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        leader, _ = await Leader.promote(client, 1)
        assert leader.log.write_timeout_s > 2 * client.timeout_s
        txn = Transaction(1, leader.scheduler.clock.now(), [], [b"k"])
        etcd.pause()
        try:
            pending = asyncio.ensure_future(leader.scheduler.submit(txn))
            await asyncio.sleep(1.5 * client.timeout_s)
            assert not pending.done()
        finally:
            etcd.resume()
        answer = await asyncio.wait_for(pending, 10 * client.timeout_s)
        assert isinstance(answer, Committed), answer
        await leader.scheduler.aclose()
        successor, _ = await Leader.promote(client, 2)
        assert successor.scheduler.status(1) == answer
        await successor.scheduler.aclose()

    run(scenario)
