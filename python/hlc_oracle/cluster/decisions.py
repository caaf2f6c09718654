"""The decision log in etcd: where a clustered leader's group-commit decisions become durable, and
where the next leader finds them (the durable step's etcd store, its recovery and retention).

Keys, under the cluster's prefix (``/hlc-oracle/<name>/``):

- ``decisions/<epoch>/<seq>``, both numbers zero-padded to 20 digits so that key order is
  (epoch, seq) order: one piece of a decided batch, its decisions in the piece format
  (``rust/src/commit/piece.rs``: versioned; version 3 keeps about 14 bytes a commit, no write
  sets, and the leader's clock reading when it wrote the piece; pieces of versions 1 and 2,
  written by earlier releases, still replay)
  (:class:`~hlc_oracle.durable.ExternalDurableStep` hands them out, at most ``max_batch_bytes``
  each: a batch over etcd's request limit is split, never refused). ``seq`` runs on across terms:
  a new leader continues after the newest stored piece.
- ``checkpoint``: ``{"epoch": E, "seq": S, "forgotten_through": [physical, logical, node]}``:
  the first piece retention kept (every older piece was deleted), and a timestamp at or above
  every trimmed decision's (a commit's timestamp, an abort's start). Checkpoints written before
  ``forgotten_through`` existed lack it and still read.

Writing: one txn per piece, fenced (:class:`~hlc_oracle.cluster.fence.Fence`): it puts the key
only while this node's term holds, so a deposed leader's late piece is refused, and its callers
are never answered. A failed write, or one whose outcome is unknown, fails every pending batch
(``UNAVAILABLE``, the engine's ``CommitOutcomeUnknownError``) and stops the node serving; the
next leader learns what was written by reading the keys.

Taking over (:meth:`ClusteredGroupCommit.promote`) does not wait for the history. In order: the
conflict detector's low watermark ``W`` is raised to the previous leader's window limit (Apache
Omid: every transaction that started under the old leader and is not decided aborts as too old,
so its lost conflict history never needs rebuilding); the checkpoint's ``forgotten_through``
becomes the engine's "decisions forgotten through" point (a resubmission of a trimmed id is
refused ``OUT_OF_RANGE``, never decided again: deciding it could flip a trimmed commit to
aborted); the ids earlier leaders aborted by id are read (``aborts/<epoch>/<seq>/<txn_id>``, one
empty key per abort by id, written in the same fenced txn as its piece; rare); then the node
serves, and the pieces of earlier terms after the checkpoint replay in the background, newest
first, from a consistent snapshot (their values read in ascending ranges from the newest end,
small ones first, so the newest pieces are in soon: the previous term's keys are known from the
takeover's reads, consecutive seqs, and the older keys are listed, keys only, when reached; a
read whose answer would pass gRPC's 4 MiB receive limit is made again with fewer keys; each
read's pieces replay in one call in a worker thread, the engine's lock let go between every
64 KiB of them, so this term's batches never wait long for it).

The rule while the history loads. Each version-3 piece records its leader's clock reading when
it was written, at or above every start and commit timestamp in it; readings never decrease in
key order. Let ``B`` be ``W`` at first, then the reading of the oldest version-3 piece loaded so
far (a version-1 or -2 piece records none and leaves ``B`` as it was). Every piece still to load
reads at or below ``B``. A request is decided at once when the decisions index answers it
(decided in this term, or already replayed), or when it commits a transaction that started
above ``B`` and whose id no earlier leader aborted by id: once every piece that could hold its
decision (reading at or above its start) is loaded and the index does not know it, it was never
decided, so it is decided now (a start at or below ``W`` aborts as too old). Every other request
waits (the scheduler holds it, and releases it, to the front of the queue, as soon as ``B``
falls below its start or the index learns its id): a commit that started at or below ``B``, an
abort by id and a commit of an id aborted by id (until the whole history is in), and a status
query of an id the index does not know (the whole history: a status query names no start).

Why no decision can flip: a stored decision about a transaction ``T`` has ``T``'s start at or
below its piece's reading: a commit's timestamp is above its start and came from that leader's
clock; the engine moves its clock past the start of every transaction it decides, aborted ones
too; a too-old abort started at or below that leader's low watermark. Readings never decrease in
key order (one leader decides its batches in seq order on a monotone clock; each leader's clock
starts above the window of every earlier one) and none passes ``W`` (no leader's clock passes
its saved window, and ``W`` is the newest saved window limit). Pieces load in descending key
order, so every piece still to load reads at or below ``B``, and a ``T`` that started above
``B`` is in none of them. An abort by id carries no start timestamp: those ids are known before
the node serves. So a transaction decided early has no stored decision still to load, and the
replayed history never contradicts it (a replayed decision never replaces one the engine holds,
and counts as older: the index forgets it first). The same proof, at the engine's level, is in
``rust/src/commit/history.rs``. A key or piece that does not decode ends the term with the key
named (the held requests are refused): it is never skipped.

Retention (:meth:`DecisionLog.trim`, run periodically by the leader): pieces written more than
``retention_s`` ago (recovered ones count from the promotion) are deleted with a DeleteRange in
the same fenced txn that moves the checkpoint, and etcd's history is compacted up to the
revision of the previous trim (one period behind, so a watch a follower re-opens from a recent
revision is not refused). A trimmed transaction's status is unknown to the next leader, and
its resubmission there is refused (see recovery).

etcd's quota: past ``--quota-backend-bytes`` etcd raises the NOSPACE alarm and refuses every
write with "database space exceeded". A piece refused so raises :class:`DecisionQuotaError`,
which names the alarm; the node stops serving with the ``etcd-quota`` reason until an operator
clears the alarm (:meth:`DecisionLog.quota_alarm`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hlc_oracle import (
    MAX_LOGICAL,
    MAX_NODE,
    Clock,
    CommitEngine,
    GroupCommitScheduler,
    HlcError,
    Timestamp,
)
from hlc_oracle._core import piece_requested_aborts
from hlc_oracle.cluster.capacity import Capacity, CapacityGuard
from hlc_oracle.cluster.etcd import (
    EtcdClient,
    EtcdError,
    EtcdQuotaError,
    KeyValue,
    RangePage,
    delete_range,
    get,
    put,
    range_op,
)
from hlc_oracle.cluster.fence import Fence, FenceError
from hlc_oracle.durable import ExternalDurableStep, external_engine
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.scheduler import CommitOptions

logger = logging.getLogger("hlc_oracle.cluster.decisions")

#: Digits of the zero-padded epoch and seq in a decision key (a u64 has at most 20).
KEY_DIGITS = 20
#: Keys read per page at recovery, at most: bounded memory, and each read well under etcd's
#: limits. Pages are also kept near ``RECOVERY_PAGE_BYTES``: many small pieces (a commit load's
#: batches of a few dozen decisions) in one read, few large ones.
RECOVERY_PAGE_KEYS = 4096
#: Bytes of pieces a history read aims at (the pieces read so far give the keys per page), well
#: under gRPC's 4 MiB receive limit.
RECOVERY_PAGE_BYTES = 1 << 20
#: Abort keys read per page (keys only).
ABORT_PAGE_KEYS = 4096
#: Default retention of decision keys; at least the clients' retry window (see config).
DEFAULT_RETENTION_S = 600.0
#: Decision batches written at once: etcd's latency (a raft round) is hidden behind the next ones.
MAX_IN_FLIGHT = 4
#: Deadline of one piece's write (the default lease's length; a node passes its own): a piece
#: write is fenced and idempotent (the same key and bytes), so it may wait out a slow etcd (a
#: starved host, a defragmentation) and be sent again on a broken connection, instead of failing
#: at the client's usual second and turning its batch into unknown outcomes.
PIECE_WRITE_TIMEOUT_S = 3.0
#: How often a leader trims expired pieces, at most (a tenth of the retention when shorter).
TRIM_INTERVAL_S = 30.0
#: Pieces in the first read of a history loaded newest first (reads then double up to
#: ``page_keys``): the newest pieces, those the requests held at a takeover wait for, come in
#: one short read.
FIRST_PAGE_KEYS = 4
#: Pause before reading the decision history again after etcd failed a read.
HISTORY_RETRY_S = 1.0
#: How often a node whose write met etcd's quota looks whether the alarm was cleared.
QUOTA_POLL_S = 1.0
#: Gate keys: a decision write met etcd's quota, or failed otherwise (outcome unknown).
QUOTA_BLOCK = "etcd-quota"
DECISION_WRITE_BLOCK = "decision-write"

__all__ = [
    "ClusteredGroupCommit",
    "DecisionDecodeError",
    "DecisionLog",
    "DecisionQuotaError",
    "Recovered",
    "decision_key",
    "parse_decision_key",
]


#: Replays a page of pieces, ``(seq, data)`` in the order to replay them, as
#: ``CommitEngine.replay_pieces`` does: ``(commits, aborts, bad)``, ``bad`` being None or the
#: index of the first piece that does not decode and why (it and those after it not replayed).
ReplayPieces = Callable[[list[tuple[int, bytes]]], tuple[int, int, tuple[int, str] | None]]


class DecisionDecodeError(HlcError):
    """A decision key, its value, or the checkpoint does not decode: promotion stops, naming it."""


class DecisionQuotaError(EtcdQuotaError):
    """etcd refused a decision piece: its database is over quota (the NOSPACE alarm)."""


def decision_key(prefix: str, epoch: int, seq: int) -> bytes:
    return f"{prefix}decisions/{epoch:0{KEY_DIGITS}d}/{seq:0{KEY_DIGITS}d}".encode()


def decisions_range(prefix: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of every decision key (``end``: the prefix with its last byte + 1)."""
    start = f"{prefix}decisions/".encode()
    return start, start[:-1] + bytes([start[-1] + 1])


def epoch_range(prefix: str, epoch: int) -> tuple[bytes, bytes]:
    """The decision keys of one epoch: ``[start, end)``."""
    epoch_start = decisions_range(prefix)[0] + f"{epoch:0{KEY_DIGITS}d}/".encode()
    return epoch_start, epoch_start[:-1] + b"0"  # "/" + 1


def checkpoint_key(prefix: str) -> bytes:
    return f"{prefix}checkpoint".encode()


def abort_key(prefix: str, epoch: int, seq: int, txn_id: int) -> bytes:
    """The key recording that piece ``epoch/seq`` aborts ``txn_id`` by id."""
    digits = KEY_DIGITS
    return f"{prefix}aborts/{epoch:0{digits}d}/{seq:0{digits}d}/{txn_id:0{digits}d}".encode()


def aborts_range(prefix: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of every abort key."""
    start = f"{prefix}aborts/".encode()
    return start, start[:-1] + bytes([start[-1] + 1])


def parse_decision_key(prefix: str, key: bytes) -> tuple[int, int]:
    """``(epoch, seq)`` of a decision key; :class:`DecisionDecodeError` naming it otherwise."""
    start = f"{prefix}decisions/".encode()
    parts = key[len(start) :].split(b"/") if key.startswith(start) else []
    if len(parts) != 2 or not all(len(p) == KEY_DIGITS and p.isdigit() for p in parts):
        raise DecisionDecodeError(
            f"decision key {key!r} is not {start.decode()}<epoch>/<seq> with {KEY_DIGITS}-digit "
            "numbers: promotion stopped (a decision key is never skipped)"
        )
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint key's value: the first piece retention kept, and a timestamp at or above
    every trimmed decision's (``None`` in a checkpoint written before it was stored)."""

    epoch: int
    seq: int
    forgotten_through: Timestamp | None = None

    def encode(self) -> bytes:
        value: dict[str, object] = {"epoch": self.epoch, "seq": self.seq}
        if self.forgotten_through is not None:
            ts = self.forgotten_through
            value["forgotten_through"] = [ts.physical, ts.logical, ts.node]
        return json.dumps(value).encode()

    @classmethod
    def decode(cls, data: bytes, key: bytes = b"checkpoint") -> Checkpoint:
        """The value stored at ``key``; :class:`DecisionDecodeError` naming it otherwise."""
        try:
            value = json.loads(data)
            epoch, seq = int(value["epoch"]), int(value["seq"])
            through = value.get("forgotten_through")
            forgotten_through = None if through is None else Timestamp(*map(int, through))
        except (ValueError, KeyError, TypeError, AttributeError, HlcError) as err:
            raise DecisionDecodeError(
                f"checkpoint key {key!r} holds {data[:80]!r}, not "
                f'{{"epoch": E, "seq": S, "forgotten_through": [physical, logical, node]}}: '
                f"promotion stopped ({err})"
            ) from None
        return cls(epoch, seq, forgotten_through)


def clock_reading(clock: Clock) -> Timestamp:
    """At or above every timestamp ``clock`` handed out or observed, and its physical time;
    nothing is handed out (so no window ceiling can refuse it)."""
    return max(clock.last(), Timestamp(clock.physical_now(), 0, 0))


def decided_through_bound(clock: Clock, skew_bounds: int = 1) -> Timestamp:
    """A timestamp at or above every decision this node has taken so far: its commits are at or
    below the clock's reading, and an abort's start (its decision time) comes from a client's
    clock at most ``max_offset_us`` ahead (``skew_bounds`` of them for decisions another node
    took)."""
    physical = clock_reading(clock).physical + skew_bounds * clock.max_offset_us
    return Timestamp(physical, MAX_LOGICAL, MAX_NODE)


@dataclass(frozen=True)
class Recovered:
    """What a promotion found: pieces replayed, the newest piece's seq (0: none since the
    checkpoint, or ever), and the store's revision it read at."""

    pieces: int
    newest_seq: int
    revision: int
    commits: int
    aborts: int


class DecisionLog:
    """The decision keys of one cluster, as the leader of one term writes, recovers and trims
    them. ``write`` is the :class:`~hlc_oracle.durable.ExternalDurableStep`'s store."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        fence: Fence,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        page_keys: int = RECOVERY_PAGE_KEYS,
        now: Callable[[], float] = time.monotonic,
        clock: Clock | None = None,
        write_timeout_s: float = PIECE_WRITE_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.fence = fence
        self.retention_s = retention_s
        self.page_keys = page_keys
        self.write_timeout_s = write_timeout_s
        #: The term that wrote the newest pieces, as :meth:`newest_seq` found it: its epoch, first
        #: and newest seq (its seqs are consecutive, so its keys are known); None: not found so.
        self.newest_term: tuple[int, int, int] | None = None
        self._now = now
        self.checkpoint_key = checkpoint_key(prefix)
        # The leader's clock: it bounds each written piece's decisions, for the checkpoint's
        # ``forgotten_through`` (None: a reader, or a test that never trims).
        self.clock = clock
        # (written at, epoch, seq, decided through) of every piece still stored, oldest first.
        self._kept: collections.deque[tuple[float, int, int, Timestamp | None]] = (
            collections.deque()
        )
        # The stored checkpoint's ``forgotten_through``, carried into the next one.
        self._forgotten_through: Timestamp | None = None
        self._compact_next: int | None = None
        self.trimmed_pieces = 0

    @property
    def epoch(self) -> int:
        return self.fence.term.epoch

    # --- writing ---

    async def write(self, batch_seq: int, data: bytes) -> None:
        """Stores one piece in a fenced txn; returns once etcd has it, waiting for its answer up
        to ``write_timeout_s`` (:data:`PIECE_WRITE_TIMEOUT_S`). Raises
        :class:`~hlc_oracle.cluster.fence.FenceError` (another term began),
        :class:`DecisionQuotaError`, or another :class:`~hlc_oracle.cluster.etcd.EtcdError`
        (unreachable, or the outcome is unknown)."""
        key = decision_key(self.prefix, self.epoch, batch_seq)
        operations = [put(key, data)]
        # Aborts by id carry no start timestamp: a new leader reads them before it decides
        # anything (see ClusteredGroupCommit.promote). They are rare: a key each.
        for txn_id in piece_requested_aborts(data):
            operations.append(put(abort_key(self.prefix, self.epoch, batch_seq, txn_id), b""))
        try:
            await self.fence.write(
                operations, f"decision batch {batch_seq}", timeout_s=self.write_timeout_s
            )
        except EtcdQuotaError as err:
            raise DecisionQuotaError(
                f"decision batch {batch_seq} ({len(data)} bytes) refused: {err} (etcd's NOSPACE "
                "alarm: compact, defragment, then `etcdctl alarm disarm`)"
            ) from err
        through = None if self.clock is None else decided_through_bound(self.clock)
        self._kept.append((self._now(), self.epoch, batch_seq, through))

    # --- recovery ---

    async def newest_seq(
        self, likely_epoch: int | None = None, first_of_epoch: RangePage | None = None
    ) -> int:
        """The seq of the newest stored piece, or the checkpoint's seq - 1, or 0: the seq a new
        leader continues after (its engine's ``first_batch_seq`` is this + 1).

        ``likely_epoch``: the epoch that most likely wrote the newest piece (the previous
        leader's). Its newest piece is found, and checked to be the newest of all, with two
        ascending reads of one key each (:meth:`_newest_seq_of`); otherwise (that epoch wrote
        nothing, or another wrote after it) a descending read finds it, for which etcd reads and
        sorts every decision key. ``first_of_epoch``: the first of the two reads, made already
        (:meth:`ClusteredGroupCommit.takeover_reads`, in the winning campaign txn)."""
        self.newest_term = None
        if likely_epoch is not None:
            found = await self._newest_seq_of(likely_epoch, first_of_epoch)
            if found is not None:
                return found
        start, end = decisions_range(self.prefix)
        page = await self.client.range(start, end, limit=1, newest_first=True, keys_only=True)
        if page.kvs:
            return parse_decision_key(self.prefix, page.kvs[0].key)[1]
        checkpoint = await self.read_checkpoint()
        return checkpoint.seq - 1 if checkpoint is not None else 0

    async def _newest_seq_of(self, epoch: int, first: RangePage | None = None) -> int | None:
        """The newest piece's seq when ``epoch`` wrote it, else ``None``. A term writes its pieces
        under consecutive seqs, so its first key and its key count give its newest seq; that key
        is then read back as the last of all the decision keys (one key from it to the end):
        a gap in the term's seqs, or a later term's pieces, fail the check, and ``None`` sends
        the caller to the full read. Neither read sorts: etcd counts keys in its index."""
        all_end = decisions_range(self.prefix)[1]
        if first is None:
            first = await self.client.range(
                *epoch_range(self.prefix, epoch), limit=1, keys_only=True
            )
        if not first.kvs:
            return None
        guess = parse_decision_key(self.prefix, first.kvs[0].key)[1] + first.count - 1
        guessed_key = decision_key(self.prefix, epoch, guess)
        rest = await self.client.range(guessed_key, all_end, limit=1, keys_only=True)
        if rest.count != 1 or rest.kvs[0].key != guessed_key:
            return None
        self.newest_term = (epoch, guess - first.count + 1, guess)
        return guess

    async def read_checkpoint(self, read: RangePage | None = None) -> Checkpoint | None:
        """The checkpoint; ``read``: the checkpoint key's page, read already (in a txn)."""
        if read is None:
            kv, _ = await self.client.get(self.checkpoint_key)
        else:
            kv = read.kvs[0] if read.kvs else None
        return None if kv is None else Checkpoint.decode(kv.value, self.checkpoint_key)

    async def aborted_ids(self) -> list[int]:
        """Every id a stored piece aborts by id (their keys, read in pages)."""
        start, end = aborts_range(self.prefix)
        ids: list[int] = []
        revision = 0
        while True:
            page = await self.client.range(
                start, end, limit=ABORT_PAGE_KEYS, revision=revision, keys_only=True
            )
            revision = page.revision
            for kv in page.kvs:
                tail = kv.key.rsplit(b"/", 1)[-1]
                if len(tail) != KEY_DIGITS or not tail.isdigit():
                    raise DecisionDecodeError(
                        f"abort key {kv.key!r} does not end in a {KEY_DIGITS}-digit id: "
                        "promotion stopped (a decision key is never skipped)"
                    )
                ids.append(int(tail))
            if not page.more or not page.kvs:
                return ids
            start = page.kvs[-1].key + b"\0"

    async def recover(
        self,
        low_watermark: Timestamp | None,
        raise_low_watermark: Callable[[Timestamp], None],
        replay_pieces: ReplayPieces,
        raise_forgotten_through: Callable[[Timestamp], None] | None = None,
    ) -> Recovered:
        """Every step of a promotion at once, in order: the low watermark (the previous leader's
        window limit; ``None`` when there was none), then every piece after the checkpoint
        replayed in key order (``replay_pieces``, a page at a time, as
        ``CommitEngine.replay_pieces``), read in pages at one revision, then
        ``raise_forgotten_through(ts)`` with the checkpoint's bound on trimmed decisions (a
        leader must pass it; a reader may not). Raises :class:`DecisionDecodeError` naming a key
        that does not decode."""
        if low_watermark is not None:
            raise_low_watermark(low_watermark)
        checkpoint = await self.read_checkpoint()
        recovered = await self.load_history(checkpoint, replay_pieces)
        if raise_forgotten_through is not None and self._forgotten_through is not None:
            raise_forgotten_through(self._forgotten_through)
        return recovered

    async def load_history(
        self,
        checkpoint: Checkpoint | None,
        replay_pieces: ReplayPieces,
        *,
        in_thread: bool = False,
        newest_first: bool = False,
    ) -> Recovered:
        """Replays every piece after ``checkpoint``, read at one revision: in key order, in
        pages; or (``newest_first``: a new leader's history, see the module docstring) the
        pieces of earlier terms in descending key order (this term's own are decided here: its
        engine knows them). Each page read is replayed in one call of ``replay_pieces``
        (``in_thread``: in a worker thread, so that a long history never holds the event loop;
        one hop per page, not per piece, which cost more than the replay of a small piece). The
        pieces count for retention from now on. Raises
        :class:`DecisionDecodeError` naming a key that does not decode; on any error nothing is
        counted for retention (a second attempt replays again: a replayed decision never
        replaces one the engine knows)."""
        start, end = decisions_range(self.prefix)
        if newest_first:
            end = min(end, decision_key(self.prefix, self.epoch, 0))
        if checkpoint is not None:
            start = max(start, decision_key(self.prefix, checkpoint.epoch, checkpoint.seq))
            self._forgotten_through = checkpoint.forgotten_through
        pieces = newest = commits = aborts = 0
        promoted_at = self._now()
        kept: list[tuple[float, int, int, Timestamp | None]] = []

        async def replay(kvs: Iterable[KeyValue]) -> None:
            nonlocal pieces, newest, commits, aborts
            page = list(kvs)
            located = [parse_decision_key(self.prefix, kv.key) for kv in page]
            batch = [(seq, kv.value) for (_, seq), kv in zip(located, page, strict=True)]
            if in_thread:
                committed, aborted, bad = await asyncio.to_thread(replay_pieces, batch)
            else:
                committed, aborted, bad = replay_pieces(batch)
            if bad is not None:
                index, reason = bad
                raise DecisionDecodeError(
                    f"decision key {page[index].key!r} does not decode: {reason}: promotion "
                    "stopped (a decision key is never skipped)"
                )
            commits += committed
            aborts += aborted
            pieces += len(page)
            for epoch, seq in located:
                newest = max(newest, seq)
                kept.append((promoted_at, epoch, seq, None))

        if newest_first:
            revision = await self._replay_newest_first(start, end, replay)
            kept.reverse()
        else:
            revision = await self._replay_in_key_order(start, end, replay)
        if newest == 0 and checkpoint is not None:
            newest = checkpoint.seq - 1
        through = None
        if self.clock is not None and pieces:
            # Replayed pieces were decided on other nodes: their clocks may run up to
            # max_offset_us ahead of this one, and their clients' a further max_offset_us.
            through = decided_through_bound(self.clock, skew_bounds=2)
        # Older than every piece this term wrote meanwhile: in front of them.
        self._kept.extendleft((t, e, s, through) for t, e, s, _ in reversed(kept))
        self._compact_next = None
        return Recovered(pieces, newest, revision, commits, aborts)

    async def _replay_in_key_order(
        self,
        start: bytes,
        end: bytes,
        replay: Callable[[Iterable[KeyValue]], Awaitable[None]],
    ) -> int:
        """The pieces in ``[start, end)`` to ``replay`` in key order, in pages at one revision
        (returned)."""
        revision = 0
        limit = min(FIRST_PAGE_KEYS, self.page_keys)
        while start < end:
            page = await self._range_page(start, end, limit, revision)
            if page is None:
                limit = max(1, limit // 8)
                continue
            revision = page.revision
            await replay(page.kvs)
            if not page.more or not page.kvs:
                break
            start = page.kvs[-1].key + b"\0"
            limit = self._next_page_keys(limit, page.kvs)
        return revision

    async def _replay_newest_first(
        self,
        start: bytes,
        end: bytes,
        replay: Callable[[Iterable[KeyValue]], Awaitable[None]],
    ) -> int:
        """The pieces in ``[start, end)`` to ``replay`` in descending key order, at one revision
        (returned): their values read in ascending ranges from the newest end,
        ``FIRST_PAGE_KEYS`` then doubling (:meth:`_next_page_keys`) (a descending range would
        make etcd read and sort every key left for each page). The keys of the term that wrote
        the newest pieces are known without a read when :meth:`newest_seq` found them
        (:attr:`newest_term`): those pieces come first, and only the older keys are listed
        (keys only), once they are reached; otherwise every key is listed first."""
        keys = self._newest_term_keys(start, end)
        unlisted: bytes | None = keys[0] if keys else end  # keys below it are still to list
        revision = 0
        high, limit = len(keys), min(FIRST_PAGE_KEYS, self.page_keys)
        while True:
            if high == 0:
                if unlisted is None:
                    return revision
                keys, revision = await self._list_keys(start, unlisted, revision)
                unlisted, high = None, len(keys)
                continue
            low = max(0, high - limit)
            values = await self._range_page(keys[low], keys[high - 1] + b"\0", 0, revision)
            if values is None:
                limit = max(1, (high - low) // 8)
                continue
            revision = revision or values.revision
            await replay(reversed(values.kvs))
            high, limit = low, self._next_page_keys(limit, values.kvs)

    def _newest_term_keys(self, start: bytes, end: bytes) -> list[bytes]:
        """The keys of :attr:`newest_term` in ``[start, end)``, ascending ([] when unknown)."""
        if self.newest_term is None:
            return []
        epoch, first, newest = self.newest_term
        keys = (decision_key(self.prefix, epoch, seq) for seq in range(first, newest + 1))
        return [key for key in keys if start <= key < end]

    async def _list_keys(self, start: bytes, end: bytes, revision: int) -> tuple[list[bytes], int]:
        """The keys in ``[start, end)`` (keys only, in pages) at ``revision`` (0: the latest),
        and the revision they were read at."""
        keys: list[bytes] = []
        while start < end:
            page = await self.client.range(
                start, end, limit=ABORT_PAGE_KEYS, revision=revision, keys_only=True
            )
            revision = revision or page.revision
            keys.extend(kv.key for kv in page.kvs)
            if not page.more or not page.kvs:
                break
            start = page.kvs[-1].key + b"\0"
        return keys, revision

    def _next_page_keys(self, limit: int, kvs: tuple[KeyValue, ...]) -> int:
        """The keys of the next page after one of ``limit`` that read ``kvs``: twice as many, at
        most ``page_keys``, and about ``RECOVERY_PAGE_BYTES`` at these pieces' mean size."""
        size = sum(len(kv.value) for kv in kvs)
        fits = RECOVERY_PAGE_BYTES * len(kvs) // size if size else self.page_keys
        return max(1, min(limit * 2, self.page_keys, fits))

    async def _range_page(
        self, start: bytes, end: bytes, limit: int, revision: int
    ) -> RangePage | None:
        """One page of decision keys; None when its answer would pass gRPC's 4 MiB receive
        limit (pieces are up to 1 MiB: read fewer), unless it is a single key."""
        try:
            return await self.client.range(start, end, limit=limit, revision=revision)
        except EtcdError as err:
            if "larger than max" not in str(err) or limit == 1 or start + b"\0" == end:
                raise
            return None

    # --- retention ---

    def kept_span_s(self) -> float:
        """Seconds since the oldest piece still kept was written (0 with none kept)."""
        return self._now() - self._kept[0][0] if self._kept else 0.0

    async def trim(self, *, compact_now: bool = False) -> int:
        """Deletes the pieces older than ``retention_s`` and moves the checkpoint past them, in
        one fenced txn, then compacts etcd's history up to the previous trim's revision (with
        ``compact_now``, up to this one's: the capacity guard frees the space at once).
        Returns how many pieces were deleted."""
        cutoff = self._now() - self.retention_s
        expired = 0
        while expired < len(self._kept) and self._kept[expired][0] <= cutoff:
            expired += 1
        if expired == 0:
            return 0
        if expired < len(self._kept):
            _, epoch, seq, _ = self._kept[expired]
        else:  # everything expired: the checkpoint names the next piece of this term
            _, epoch, last_seq, _ = self._kept[-1]
            seq = last_seq + 1
        forgotten_through = self._forgotten_through
        for _, _, _, through in list(self._kept)[:expired]:
            if through is not None and (forgotten_through is None or through > forgotten_through):
                forgotten_through = through
        if forgotten_through is not None and self.clock is not None:
            # As the engine does when its index forgets: never past the clock, so starts taken
            # after the trim are not refused (trimmed pieces are a retention period old).
            forgotten_through = min(forgotten_through, clock_reading(self.clock))
        start, _ = decisions_range(self.prefix)
        first_kept = decision_key(self.prefix, epoch, seq)
        aborts_start, _ = aborts_range(self.prefix)
        checkpoint = Checkpoint(epoch, seq, forgotten_through).encode()
        result = await self.fence.write(
            [
                put(self.checkpoint_key, checkpoint),
                delete_range(start, first_kept),
                delete_range(aborts_start, abort_key(self.prefix, epoch, seq, 0)),
            ],
            f"decision retention (checkpoint {epoch}/{seq})",
        )
        self._forgotten_through = forgotten_through
        for _ in range(expired):
            self._kept.popleft()
        self.trimmed_pieces += expired
        compact_to, self._compact_next = self._compact_next, result.revision
        if compact_now:
            compact_to, self._compact_next = result.revision, None
        if compact_to is not None:
            await self.client.compact(compact_to)
        logger.debug("decision retention: %d pieces trimmed, checkpoint %d/%d", expired, epoch, seq)
        return expired

    # --- quota ---

    async def quota_alarm(self) -> bool:
        """Whether etcd's NOSPACE alarm is raised (on any member)."""
        return await self.client.nospace_alarm()


class ClusteredGroupCommit:
    """Group commit on a clustered node: opened by each promotion, closed by each step-down.

    ``install(scheduler)`` hands the scheduler to the Transactions service (``None``: none, this
    node does not lead). ``end_term(reason)`` is called once when a decision write fails: the
    node must stop serving at once and not lead again in this epoch (its in-flight writes are
    fenced off only by a new one). A quota failure also blocks the gate under ``etcd-quota``
    until etcd's NOSPACE alarm is cleared.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        clock: Clock,
        options: CommitOptions,
        gate: ServingGate,
        *,
        retention_s: float,
        install: Callable[[GroupCommitScheduler | None], None],
        end_term: Callable[[str], None],
        quota_bytes: int = 0,
        write_timeout_s: float = PIECE_WRITE_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock
        #: Each piece write's deadline (:meth:`DecisionLog.write`): the lease's length.
        self.write_timeout_s = write_timeout_s
        self.options = options
        self.gate = gate
        self.retention_s = retention_s
        self.install = install
        self.end_term = end_term
        self.scheduler: GroupCommitScheduler | None = None
        self.log: DecisionLog | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._quota_task: asyncio.Task[None] | None = None
        #: A promotion's decision history is still loading (requests that may need it wait).
        self.history_loading = False
        #: etcd's quota when configured (0: read from etcd; see :mod:`.capacity`).
        self.quota_bytes = quota_bytes
        #: This term's capacity guard, once its history is loaded.
        self.guard: CapacityGuard | None = None
        # The next promotion's engine, built and prefaulted ahead (see prepare_standby).
        self._standby: asyncio.Future[CommitEngine | None] | None = None
        self._closed = False

    def prepare_standby(self) -> None:
        """Builds the next promotion's engine in a worker thread, unless one is ready or on its
        way: its conflict table and decisions index faulted in (about 100 MiB at the default
        sizes), so that a takeover neither builds an engine nor waits for the kernel to zero
        fresh pages in its first replays and batches (tens to hundreds of milliseconds on a busy
        host). A follower keeps one; a leader builds the next one when it steps down."""
        if self._standby is None and not self._closed:
            self._standby = asyncio.ensure_future(asyncio.to_thread(self._build_standby))

    def _build_standby(self) -> CommitEngine | None:
        engine = external_engine(self.clock, self.options)
        engine.prefault()
        return engine

    def standby_ready(self) -> bool:
        """Whether a standby engine is built and waiting for the next promotion."""
        return self._standby is not None and self._standby.done()

    async def _take_standby(self) -> CommitEngine | None:
        """The standby engine, or None: none was prepared, building it failed, or it is still
        being built (a node that just started: faulting its pages in can take longer than
        building a fresh engine, which the promotion then does; the standby is kept for the
        next promotion)."""
        standby, self._standby = self._standby, None
        if standby is None:
            return None
        if not standby.done():
            self._standby = standby
            return None
        try:
            return await standby
        except Exception as err:
            logger.warning("standby engine", extra={"fields": {"error": str(err)}})
            return None

    def takeover_reads(self, previous_epoch: int | None) -> list[Any]:
        """What a winning campaign txn reads for :meth:`promote` (as of the new epoch's
        revision, no round trip of their own): the checkpoint key and, with ``previous_epoch``,
        that epoch's first decision key and key count. Their pages go to ``promote``'s
        ``pages``, in this order."""
        reads = [get(checkpoint_key(self.prefix))]
        if previous_epoch is not None:
            # The first read of DecisionLog.newest_seq's look in the previous epoch.
            start, end = epoch_range(self.prefix, previous_epoch)
            reads.append(range_op(start, end, limit=1, keys_only=True))
        return reads

    async def promote(
        self,
        fence: Fence,
        previous_window_limit_us: int | None,
        previous_epoch: int | None = None,
        pages: Sequence[RangePage] = (),
    ) -> None:
        """Takes over without waiting for the decision history, in order: the low watermark
        (the previous leader's window limit), the checkpoint's bound on trimmed decisions, and
        the ids earlier leaders aborted by id (small: read now); then the scheduler is
        installed and the node may serve, while the pieces replay in the background (see the
        module docstring: only requests that may need them wait). Raises
        :class:`DecisionDecodeError` or :class:`EtcdError` (nothing installed)."""
        log = DecisionLog(
            self.client,
            self.prefix,
            fence,
            retention_s=self.retention_s,
            clock=self.clock,
            write_timeout_s=self.write_timeout_s,
        )
        # Three independent reads side by side, and the standby engine (prepare_standby): the
        # takeover waits for the slowest, not for the sum. The newest piece's seq is looked for
        # in ``previous_epoch`` first (the previous leader's: two short reads), and only
        # otherwise by a read that sorts every decision key. Each is awaited to its end; the
        # first failure, in this order, is raised (the standby is kept for the next attempt).
        # ``pages``: the takeover_reads the winning campaign txn made (checkpoint, first key of
        # previous_epoch); each not made is made here.
        checkpoint_page = pages[0] if pages else None
        first_of_epoch = pages[1] if len(pages) > 1 and previous_epoch is not None else None
        checkpoint_read = asyncio.ensure_future(log.read_checkpoint(checkpoint_page))
        aborted_read = asyncio.ensure_future(log.aborted_ids())
        newest_read = asyncio.ensure_future(log.newest_seq(previous_epoch, first_of_epoch))
        standby = asyncio.ensure_future(self._take_standby())
        reads = (checkpoint_read, aborted_read, newest_read, standby)
        try:
            await asyncio.wait(reads)
        finally:
            for read in reads:
                read.cancel()  # only if promote itself was cancelled: none is left running
        if any(read.exception() is not None for read in reads):  # each failure is retrieved
            self._standby = standby
        checkpoint = checkpoint_read.result()
        aborted_ids = aborted_read.result()
        newest_seq = newest_read.result()
        step = ExternalDurableStep(
            log.write,
            asyncio.get_running_loop(),
            max_in_flight=MAX_IN_FLIGHT,
            first_batch_seq=newest_seq + 1,
            on_failure=self._write_failed,
            standby=standby.result(),
        )
        scheduler = GroupCommitScheduler(None, self.clock, self.options, durable_step=step)
        engine = scheduler.engine
        low_watermark = (
            None
            if previous_window_limit_us is None
            else Timestamp(previous_window_limit_us, MAX_LOGICAL, MAX_NODE)
        )
        engine.begin_history_load(low_watermark, aborted_ids)
        if checkpoint is not None and checkpoint.forgotten_through is not None:
            engine.raise_forgotten_through(checkpoint.forgotten_through)
        scheduler.hold_for_history()
        self.log, self.scheduler = log, scheduler
        self.history_loading = True
        self.install(scheduler)
        self.gate.unblock(DECISION_WRITE_BLOCK)
        self._spawn(self._load_history(log, scheduler, checkpoint, fence.term.epoch))
        logger.info(
            "serving while the decision history loads",
            extra={"fields": {"epoch": fence.term.epoch, "aborted_by_id": len(aborted_ids)}},
        )

    async def _load_history(
        self,
        log: DecisionLog,
        scheduler: GroupCommitScheduler,
        checkpoint: Checkpoint | None,
        epoch: int,
    ) -> None:
        """Replays the stored pieces, then releases the requests held for them and starts
        retention. etcd unreachable: tried again; a piece that does not decode: the term ends
        (nothing is guessed; the held requests are refused when the scheduler closes)."""
        engine = scheduler.engine
        started = time.monotonic()

        def replay(page: list[tuple[int, bytes]]) -> tuple[int, int, tuple[int, str] | None]:
            # Each page lowers the bound on the pieces still to load: release what it frees.
            replayed = engine.replay_pieces(page)
            scheduler.history_progressed()
            return replayed

        while True:
            try:
                recovered = await log.load_history(
                    checkpoint, replay, in_thread=True, newest_first=True
                )
                break
            except DecisionDecodeError as err:
                logger.error("decision history", extra={"fields": {"error": str(err)}})
                self._write_failed(f"decision history: {err}")
                return
            except EtcdError as err:
                logger.warning(
                    "decision history: etcd read failed, trying again",
                    extra={"fields": {"error": str(err)}},
                )
                await asyncio.sleep(HISTORY_RETRY_S)
        engine.end_history_load()
        scheduler.history_loaded()
        self.history_loading = False
        self._spawn(self._trim_periodically(log))
        self.guard = CapacityGuard(self.client, log, quota_bytes=self.quota_bytes)
        self._spawn(self.guard.run())
        log_fields = {
            "epoch": epoch,
            "pieces": recovered.pieces,
            "commits": recovered.commits,
            "aborts": recovered.aborts,
            "seconds": round(time.monotonic() - started, 3),
        }
        logger.info("decisions recovered", extra={"fields": log_fields})

    def capacity(self) -> Capacity | None:
        """What the capacity guard saw last (the retention in force among it); None unless this
        node leads with its history loaded."""
        return self.guard.capacity if self.guard is not None else None

    async def demote(self) -> None:
        """Step-down or shutdown: the scheduler is uninstalled, then closed (its pending
        batches settle: answered once durable, or outcome unknown)."""
        self.install(None)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        scheduler, self.scheduler, self.log = self.scheduler, None, None
        self.history_loading = False
        self.guard = None
        if scheduler is not None:
            await scheduler.aclose()
        # A failed write's block ends with its term (the node's not-leader block covers it).
        self.gate.unblock(DECISION_WRITE_BLOCK)
        self.prepare_standby()  # for the next term

    async def close(self) -> None:
        self._closed = True
        standby, self._standby = self._standby, None
        if standby is not None:
            standby.cancel()  # a build under way ends in its thread; its engine is dropped
        await self.demote()
        if self._quota_task is not None:
            self._quota_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._quota_task

    def _spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write_failed(self, reason: str) -> None:
        """The step's ``on_failure`` (on the loop): stop serving at once."""
        if DecisionQuotaError.__name__ in reason:
            self.gate.block(QUOTA_BLOCK, f"etcd is over its quota (NOSPACE alarm): {reason}")
            if self._quota_task is None or self._quota_task.done():
                self._quota_task = asyncio.ensure_future(self._until_quota_cleared())
        else:
            self.gate.block(DECISION_WRITE_BLOCK, f"a decision write failed: {reason}")
        self.install(None)
        self.end_term(reason)

    async def _until_quota_cleared(self) -> None:
        while True:
            await asyncio.sleep(QUOTA_POLL_S)
            try:
                if not await self.client.nospace_alarm():
                    break
            except EtcdError as err:
                logger.warning("etcd alarm check failed", extra={"fields": {"error": str(err)}})
        self.gate.unblock(QUOTA_BLOCK)
        logger.info("etcd's NOSPACE alarm is cleared")

    async def _trim_periodically(self, log: DecisionLog) -> None:
        while True:
            # The capacity guard may have shortened the retention: trim more often then.
            await asyncio.sleep(min(TRIM_INTERVAL_S, log.retention_s / 10))
            try:
                await log.trim()
            except FenceError as err:
                self._write_failed(f"decision retention: {err}")
                return
            except EtcdError as err:
                logger.warning("decision retention failed", extra={"fields": {"error": str(err)}})
