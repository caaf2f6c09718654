"""A new leader takes over while its decision history loads (real etcd, in process): it decides
fresh transactions at once, and aborts and status queries naming a fresh start; a resubmission,
an abort by id, a commit of an id aborted by id and a status query wait for the history (or,
naming their start, for the pieces that could hold it) and then get the first decision; nothing
flips. The history loads newest first: a held commit is answered as soon as every piece that
could hold its decision is in, and pieces of the previous release (no clock reading) are still
honoured."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hlc_oracle import (
    MAX_LOGICAL,
    MAX_NODE,
    Aborted,
    Clock,
    CommitEngine,
    Committed,
    ConflictKind,
    GroupCommitScheduler,
    SchedulerClosedError,
    Timestamp,
    Transaction,
)
from hlc_oracle._core import encode_commit_request
from hlc_oracle.cluster import decisions
from hlc_oracle.cluster.decisions import ClusteredGroupCommit, DecisionLog

from tests.support.decision_leader import (
    PREFIX,
    Leader,
    client_of,
    clustered_group_commit,
    run,
    take_leadership,
)
from tests.support.etcd_process import EtcdMember
from tests.support.stored_pieces import (
    FIXTURES,
    as_expected,
    decision,
    first_decisions,
    stored_pieces,
    transaction,
)

HISTORY = 100_000
GROUP = 1_000
WAIT_S = 30.0


class HeldHistory:
    """Holds every promotion's history load until ``release``: the test decides what happens
    while it loads, whatever this machine's speed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        load = DecisionLog.load_history

        async def held(log: DecisionLog, *args: Any, **kwargs: Any) -> Any:
            self.started.set()
            await self.release.wait()
            return await load(log, *args, **kwargs)

        monkeypatch.setattr(DecisionLog, "load_history", held)


async def write_history(client: Any) -> tuple[Leader, dict[int, Any], list[Transaction]]:
    """A first term: ``HISTORY`` commits, an abort by id; returns its answers by id."""
    leader, _ = await Leader.promote(client, 1)
    clock = leader.scheduler.clock
    answers: dict[int, Any] = {}
    txns: list[Transaction] = []
    for first in range(1, HISTORY + 1, GROUP):
        start = clock.now()
        group = [
            Transaction(txn_id, start, [], [b"h%d" % txn_id])
            for txn_id in range(first, first + GROUP)
        ]
        txns.extend(group)
        for txn, answer in zip(group, await leader.scheduler.submit_many(group), strict=True):
            answers[txn.txn_id] = answer
    answers[10**9] = await leader.scheduler.abort(10**9)
    await leader.scheduler.aclose()
    return leader, answers, txns


class PausedHistory:
    """Pauses every promotion's history load after its first ``after`` pieces (in the worker
    thread that replays them) until ``resume``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.replayed = 0
        load = DecisionLog.load_history

        async def paused(log: DecisionLog, checkpoint: Any, replay_pieces: Any, **kw: Any) -> Any:
            def replay(page: list[tuple[int, bytes]]) -> tuple[int, int, Any]:
                # One piece at a time, so that the pause falls after exactly ``after``.
                commits = aborts = 0
                for index, piece in enumerate(page):
                    if self.replayed == after:
                        self.paused.set()
                        assert self.resume.wait(WAIT_S)
                    self.replayed += 1
                    committed, aborted, bad = replay_pieces([piece])
                    commits, aborts = commits + committed, aborts + aborted
                    if bad is not None:
                        return commits, aborts, (index, bad[1])
                return commits, aborts, None

            return await load(log, checkpoint, replay, **kw)

        monkeypatch.setattr(DecisionLog, "load_history", paused)


async def write_previous_release(client: Any) -> None:
    """A term of the previous release: the version-2 pieces of ``tests/data``, each with its
    abort keys, written as that release's leader did (a fenced txn each)."""
    fence = await take_leadership(client, "node-0")
    log = DecisionLog(client, PREFIX, fence)
    for seq, data in stored_pieces(2):
        await log.write(seq, data)
    assert (FIXTURES[2] / "expected.json").is_file()


async def promote_node_2(
    client: Any, clock: Clock, window_limit: int, standby: bool = False
) -> tuple[ClusteredGroupCommit, GroupCommitScheduler | None, list[str]]:
    """Node 2 takes the leadership and promotes its group commit above ``window_limit`` (after
    preparing a standby engine, as a follower does, with ``standby``): the group commit, the
    scheduler it installed, and the reasons of the terms it ended (a list that grows)."""
    fence = await take_leadership(client, "node-2")
    group_commit, installed, ended = clustered_group_commit(client, clock)
    if standby:
        group_commit.prepare_standby()
        await eventually(group_commit.standby_ready)
    await group_commit.promote(fence, window_limit)
    return group_commit, installed[-1], ended


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def next_term_clock(first: Leader) -> tuple[int, Clock]:
    """The window limit above the first term's timestamps, and node 2's clock floored at it."""
    window_limit = first.scheduler.clock.last().physical + 1
    return window_limit, Clock(node=2, floor=Timestamp(window_limit, MAX_LOGICAL, MAX_NODE))


async def assert_the_term_continues(
    group_commit: ClusteredGroupCommit,
    scheduler: GroupCommitScheduler,
    clock: Clock,
    newest: int,
    answers: dict[int, Any],
    key: bytes,
) -> None:
    """A fresh commit (writing ``key``) is decided in the piece after the stored ``newest``, and
    once the history is in, the first term's decisions are answered as first given."""
    fresh = Transaction(5 * 10**9, clock.now(), [], [key])
    assert isinstance(await asyncio.wait_for(scheduler.submit(fresh), WAIT_S), Committed)
    assert group_commit.log is not None
    assert await group_commit.log.newest_seq() == newest + 1
    await eventually(lambda: not group_commit.history_loading)
    assert scheduler.status(1) == answers[1]


def test_a_new_leader_decides_fresh_commits_while_its_history_loads(
    etcd: EtcdMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        first, answers, txns = await write_history(client)
        held = HeldHistory(monkeypatch)
        window_limit, clock = next_term_clock(first)
        group_commit, scheduler, ended = await promote_node_2(client, clock, window_limit)
        assert scheduler is not None and group_commit.history_loading
        await asyncio.wait_for(held.started.wait(), WAIT_S)

        # Fresh: decided at once; so are an abort and a status query naming a fresh start.
        fresh = Transaction(5 * 10**9, clock.now(), [], [b"h1"])
        assert isinstance(await asyncio.wait_for(scheduler.submit(fresh), WAIT_S), Committed)
        fresh_abort = await asyncio.wait_for(scheduler.abort(6 * 10**9, clock.now()), WAIT_S)
        assert isinstance(fresh_abort, Aborted) and fresh_abort.conflict is None
        unknown = asyncio.to_thread(scheduler.status, 6 * 10**9 + 1, clock.now())
        assert await asyncio.wait_for(unknown, WAIT_S) is None
        # May need the history: held.
        old = txns[HISTORY // 2]
        resubmitted = asyncio.ensure_future(scheduler.submit(old))
        late_commit_of_aborted = asyncio.ensure_future(
            scheduler.submit(Transaction(10**9, clock.now(), [], [b"x"]))
        )
        abort_of_committed = asyncio.ensure_future(scheduler.abort(txns[0].txn_id))
        # Naming the start it had (below the window limit): held all the same.
        abort_naming_start = asyncio.ensure_future(
            scheduler.abort(txns[1].txn_id, txns[1].start_ts)
        )
        status_result: list[Any] = []
        status = threading.Thread(
            target=lambda: status_result.append(scheduler.status(txns[-1].txn_id))
        )
        status_naming_start = asyncio.ensure_future(
            asyncio.to_thread(scheduler.status, txns[-2].txn_id, txns[-2].start_ts)
        )
        status.start()
        await asyncio.sleep(0.3)
        waiting = (resubmitted, late_commit_of_aborted, abort_of_committed, abort_naming_start)
        assert not any(f.done() for f in (*waiting, status_naming_start))
        assert status.is_alive()
        # A fresh one still goes by them.
        fresh2 = Transaction(5 * 10**9 + 1, clock.now(), [], [b"h2"])
        assert isinstance(await asyncio.wait_for(scheduler.submit(fresh2), WAIT_S), Committed)

        held.release.set()
        assert await asyncio.wait_for(resubmitted, WAIT_S) == answers[old.txn_id]
        assert await asyncio.wait_for(late_commit_of_aborted, WAIT_S) == answers[10**9]
        assert await asyncio.wait_for(abort_of_committed, WAIT_S) == answers[txns[0].txn_id]
        assert await asyncio.wait_for(abort_naming_start, WAIT_S) == answers[txns[1].txn_id]
        assert await asyncio.wait_for(status_naming_start, WAIT_S) == answers[txns[-2].txn_id]
        await asyncio.to_thread(status.join, WAIT_S)
        assert status_result == [answers[txns[-1].txn_id]]
        await eventually(lambda: not group_commit.history_loading)
        # Every decision of the first term, and this term's, as first given.
        for txn_id in (1, HISTORY // 3, HISTORY, 10**9):
            assert scheduler.status(txn_id) == answers[txn_id]
        assert scheduler.engine.stats()["retained_decisions"] >= HISTORY + 3
        assert ended == []
        await group_commit.close()

    run(scenario)


def test_an_undecodable_history_ends_the_term_and_refuses_what_waited(
    etcd: EtcdMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        first, _ = await Leader.promote(client, 1)
        await first.scheduler.aclose()
        held = HeldHistory(monkeypatch)
        bad = decisions.decision_key(PREFIX, first.log.epoch, 10**6)
        await client.put(bad, b"\x09not a piece")
        clock = Clock(node=2)
        group_commit, scheduler, ended = await promote_node_2(client, clock, clock.now().physical)
        assert scheduler is not None
        waiting = asyncio.ensure_future(asyncio.to_thread(scheduler.status, 12345))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        held.release.set()
        await eventually(lambda: bool(ended))
        assert "does not decode" in ended[0]
        await group_commit.close()
        with pytest.raises(SchedulerClosedError):
            await asyncio.wait_for(waiting, WAIT_S)

    run(scenario)


def test_what_waits_for_the_history_in_every_request_shape() -> None:
    """``needs_history`` of a transaction, an abort (with its start or not), a group and a
    serialized message."""
    engine = CommitEngine(None, Clock(node=2), durability="external")
    watermark = engine.clock.now()
    fresh = Transaction(1, engine.clock.now(), [], [b"a"])
    old = Transaction(2, watermark, [], [b"a"])
    aborted_by_id = Transaction(3, engine.clock.now(), [], [b"a"])
    engine.begin_history_load(watermark, [3])
    assert engine.history_loading
    assert not engine.needs_history(fresh)
    assert engine.needs_history(old) and engine.needs_history(aborted_by_id)
    assert engine.needs_history(7)  # an abort by id
    # An abort naming its start: held as a commit with that start would be.
    assert not engine.needs_history((7, fresh.start_ts)) and engine.needs_history((7, watermark))
    assert engine.needs_history((3, fresh.start_ts))  # its id was aborted by id before
    assert not engine.needs_history([fresh, (7, fresh.start_ts)])
    assert not engine.needs_history([fresh]) and engine.needs_history([fresh, 7])
    assert not engine.needs_history(encode_commit_request([fresh]))
    assert engine.needs_history(encode_commit_request([fresh, old]))
    assert engine.needs_history(encode_commit_request([aborted_by_id]))
    engine.end_history_load()
    assert not engine.needs_history(encode_commit_request([old])) and not engine.needs_history(7)


def test_a_held_commit_is_answered_once_the_pieces_that_could_hold_it_are_in(
    etcd: EtcdMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rolling upgrade too: a term of the previous release (version-2 pieces), then a term of
    this one (version 3), then a new leader: the calls in flight at the takeover (started at
    or below its low watermark) are answered after the newest pieces, while the rest of the
    history (the oldest term's pieces among it) still loads; every decision is honoured."""

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        await write_previous_release(client)
        first, answers, txns = await write_history(client)
        old_clock = first.scheduler.clock
        # In flight when the leader died: never submitted there, started below its window.
        late = Transaction(7 * 10**9, old_clock.now(), [], [b"late"])
        window_limit = old_clock.last().physical + 1
        held = HeldHistory(monkeypatch)
        paused = PausedHistory(monkeypatch, after=2)
        clock = Clock(node=2, floor=Timestamp(window_limit, MAX_LOGICAL, MAX_NODE))
        group_commit, scheduler, ended = await promote_node_2(client, clock, window_limit)
        assert scheduler is not None
        await asyncio.wait_for(held.started.wait(), WAIT_S)
        newest = txns[-1]  # in the newest piece but one (the abort by id is the newest)
        oldest = txns[0]
        previous = [transaction(e) for e in first_decisions().values() if "start_ts" in e]
        waiting = {
            "late": asyncio.ensure_future(scheduler.submit(late)),
            "newest": asyncio.ensure_future(scheduler.submit(newest)),
            "oldest": asyncio.ensure_future(scheduler.submit(oldest)),
            "previous": asyncio.ensure_future(scheduler.submit_many(previous)),
            # Status queries naming their start wait as the commits do.
            "newest status": asyncio.ensure_future(
                asyncio.to_thread(scheduler.status, newest.txn_id, newest.start_ts)
            ),
            "oldest status": asyncio.ensure_future(
                asyncio.to_thread(scheduler.status, oldest.txn_id, oldest.start_ts)
            ),
        }
        await asyncio.sleep(0.3)
        assert not any(f.done() for f in waiting.values())

        held.release.set()
        assert await asyncio.to_thread(paused.paused.wait, WAIT_S)
        # Two pieces in: the newest call is answered from them, the late one decided (too old,
        # as Apache Omid aborts what an earlier leader left undecided); the rest waits.
        assert await asyncio.wait_for(waiting["newest"], WAIT_S) == answers[newest.txn_id]
        newest_status = await asyncio.wait_for(waiting["newest status"], WAIT_S)
        assert newest_status == answers[newest.txn_id]
        late_answer = await asyncio.wait_for(waiting["late"], WAIT_S)
        assert isinstance(late_answer, Aborted) and late_answer.conflict is not None
        assert late_answer.conflict.kind == ConflictKind.TOO_OLD
        assert group_commit.history_loading and paused.replayed == 2
        await asyncio.sleep(0.2)
        assert not any(waiting[name].done() for name in ("oldest", "previous", "oldest status"))

        paused.resume.set()
        assert await asyncio.wait_for(waiting["oldest"], WAIT_S) == answers[oldest.txn_id]
        oldest_status = await asyncio.wait_for(waiting["oldest status"], WAIT_S)
        assert oldest_status == answers[oldest.txn_id]
        got = await asyncio.wait_for(waiting["previous"], WAIT_S)
        expected = [first_decisions()[t.txn_id] for t in previous]
        assert [as_expected(answer) for answer in got] == [decision(e) for e in expected]
        await eventually(lambda: not group_commit.history_loading)
        assert ended == []
        await group_commit.close()

    run(scenario)


def test_a_promotion_takes_the_standby_engine_and_a_step_down_prepares_the_next(
    etcd: EtcdMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower's standby engine (built and prefaulted ahead) is the one its promotion
    installs, its pieces numbered on after the stored ones; stepping down prepares the next
    standby, closing prepares none."""
    built: list[CommitEngine] = []
    build = decisions.external_engine

    def recorded(*args: Any, **kw: Any) -> CommitEngine:
        engine = build(*args, **kw)
        built.append(engine)
        return engine

    monkeypatch.setattr(decisions, "external_engine", recorded)

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        first, answers, _ = await write_history(client)
        newest = await first.log.newest_seq()
        window_limit, clock = next_term_clock(first)
        group_commit, scheduler, _ = await promote_node_2(client, clock, window_limit, True)
        assert scheduler is not None and len(built) == 1
        assert scheduler.engine is built[0] and scheduler.engine.next_batch_seq == newest + 1
        await assert_the_term_continues(group_commit, scheduler, clock, newest, answers, b"s1")
        await group_commit.demote()
        await eventually(lambda: len(built) == 2)  # the next term's standby
        await group_commit.close()
        await asyncio.sleep(0.1)
        assert len(built) == 2
        await client.close()

    run(scenario)


def test_a_promotion_given_the_winning_txns_reads_continues_as_one_that_reads_them_itself(
    etcd: EtcdMember,
) -> None:
    """The checkpoint and the previous epoch's first decision key, read in the winning campaign
    txn (``takeover_reads``), give the promotion the same newest seq, so its pieces continue the
    stored ones, and the same history."""

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        first, answers, _ = await write_history(client)
        newest = await first.log.newest_seq()
        window_limit, clock = next_term_clock(first)
        group_commit, installed, _ = clustered_group_commit(client, clock)
        reads = group_commit.takeover_reads(first.log.epoch)
        assert len(reads) == 2
        fence = await take_leadership(client, "node-2")
        pages = (await client.txn([], reads)).pages
        assert pages[1].count == newest  # the first term wrote every piece, from seq 1
        await group_commit.promote(fence, window_limit, first.log.epoch, pages)
        scheduler = installed[-1]
        assert scheduler is not None and scheduler.engine.next_batch_seq == newest + 1
        await assert_the_term_continues(group_commit, scheduler, clock, newest, answers, b"p1")
        await group_commit.close()
        await client.close()

    run(scenario)


def test_a_promotion_does_not_wait_for_a_standby_still_being_built(
    etcd: EtcdMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that just started may win before its standby engine is faulted in: the promotion
    builds a fresh engine instead of waiting, and keeps the standby for its next promotion."""
    release = threading.Event()
    build = ClusteredGroupCommit._build_standby

    def slow(self: ClusteredGroupCommit) -> CommitEngine | None:
        assert release.wait(WAIT_S)
        return build(self)

    monkeypatch.setattr(ClusteredGroupCommit, "_build_standby", slow)

    async def scenario() -> None:
        client = client_of([etcd.endpoint])
        first, _, _ = await write_history(client)
        window_limit, clock = next_term_clock(first)
        fence = await take_leadership(client, "node-2")
        group_commit, installed, _ = clustered_group_commit(client, clock)
        group_commit.prepare_standby()
        await asyncio.wait_for(group_commit.promote(fence, window_limit), WAIT_S)
        scheduler = installed[-1]
        assert scheduler is not None and not group_commit.standby_ready()
        fresh = Transaction(5 * 10**9, clock.now(), [], [b"w1"])
        assert isinstance(await asyncio.wait_for(scheduler.submit(fresh), WAIT_S), Committed)
        release.set()
        await eventually(group_commit.standby_ready)  # kept for the next promotion
        await group_commit.close()
        assert not group_commit.standby_ready()
        await client.close()

    run(scenario)
