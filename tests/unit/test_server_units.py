"""Server parts without the network: the serving gate, the window file, the clock ceiling."""

from __future__ import annotations

import asyncio
import json
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hlc_oracle import MAX_LOGICAL, CeilingReachedError, Clock, ManualClock, Timestamp
from hlc_oracle.node.gate import LEASE_LAPSED, ServingGate
from hlc_oracle.node.window import (
    TimestampWindow,
    WindowFileError,
    WindowStore,
    floor_for,
    lead_bound_us,
    wait_out_lead,
)
from hlc_oracle.server import handler_frame
from hlc_oracle.server.allocator import keep_freed_memory


def test_gate_blocks_while_any_reason_remains() -> None:
    gate = ServingGate()
    changes: list[tuple[bool, str | None]] = []
    gate.add_listener(lambda serving, message: changes.append((serving, message)))
    assert gate.serving and gate.refusal() is None
    gate.block("skew", "clock offset 900 ms is past the limit")
    gate.block("shutdown", "shutting down")
    assert not gate.serving
    assert gate.refusal() == "skew: clock offset 900 ms is past the limit; shutdown: shutting down"
    gate.unblock("skew")
    assert gate.refusal() == "shutdown: shutting down"
    gate.unblock("skew")  # not blocked any more: no change, no notification
    gate.unblock("shutdown")
    assert gate.serving
    assert [serving for serving, _ in changes] == [True, False, False, False, True]
    assert gate.reasons() == {}


def test_reads_close_only_for_blocks_that_make_decisions_stale() -> None:
    gate = ServingGate()
    for key in ("starting", "window", "clock-skew", "clock-jump", "shutdown"):
        gate.block(key, "refusing")
    assert gate.refusal() is not None and gate.read_refusal() is None
    gate.block("not-leader", "the leader is node-2")
    assert gate.read_refusal() == "not-leader: the leader is node-2"
    gate.block("fence", "lost the fence")
    assert gate.read_refusal() == "not-leader: the leader is node-2; fence: lost the fence"
    gate.unblock("not-leader")
    gate.unblock("fence")
    assert gate.read_refusal() is None and not gate.serving


def test_window_saves_from_many_threads_do_not_race(tmp_path: Path) -> None:
    # A save cancelled on the event loop (asyncio.to_thread) keeps running in its thread while
    # the next save starts: both used to rename the same temporary file, and one failed.
    store = WindowStore(tmp_path / "data")
    limits = [[1_000 * thread + step for step in range(25)] for thread in range(6)]

    def save_all(mine: list[int]) -> None:
        for limit in mine:
            store.save(limit)

    with ThreadPoolExecutor(len(limits)) as pool:
        for done in [pool.submit(save_all, mine) for mine in limits]:
            done.result()
    assert store.load() in {mine[-1] for mine in limits}
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["timestamp-window"]


def test_window_file_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "data")
    assert store.load() is None
    store.save(1_000)
    store.save(2_000)
    assert store.load() == 2_000
    assert sorted(p.name for p in store.data_dir.iterdir()) == ["timestamp-window"]


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b'{"format": 1}', b'{"format": 2, "limit_physical_us": 5}', b'{"format": 1, '
     b'"limit_physical_us": -1}', b"[1]"],
)  # fmt: skip
def test_damaged_window_file_refuses_to_start(tmp_path: Path, content: bytes) -> None:
    store = WindowStore(tmp_path)
    store.path.write_bytes(content)
    with pytest.raises(WindowFileError, match="timestamp-window"):
        store.load()


def test_floor_is_the_last_timestamp_the_saved_limit_allowed() -> None:
    assert floor_for(None) is None
    assert floor_for(77) == Timestamp(77, MAX_LOGICAL)


def test_clock_ceiling_from_python() -> None:
    manual = ManualClock(1_000)
    clock = Clock(1, physical_clock=manual, ceiling_physical=1_000)
    assert clock.ceiling_physical == 1_000
    assert clock.now() == Timestamp(1_000, 0, 1)
    manual.set(1_001)
    with pytest.raises(CeilingReachedError, match="would pass the clock's ceiling"):
        clock.now()
    assert clock.raise_ceiling(5) == 1_000
    assert clock.raise_ceiling(2_000) == 2_000
    assert clock.now() == Timestamp(1_001, 0, 1)
    assert Clock().ceiling_physical is None
    with pytest.raises(TypeError):
        clock.raise_ceiling("soon")  # type: ignore[arg-type]


def test_window_saves_before_raising_and_renews_ahead(tmp_path: Path) -> None:
    manual = ManualClock(10_000_000)
    clock = Clock(2, physical_clock=manual, ceiling_physical=0)
    store = WindowStore(tmp_path)
    saved: list[int] = []
    window = TimestampWindow(
        clock, store, size_us=1_000_000, check_interval_s=0.001, on_saved=saved.append
    )

    async def main() -> None:
        with pytest.raises(CeilingReachedError):
            clock.now()
        await window.start()
        assert store.load() == 11_000_000 == clock.ceiling_physical
        assert clock.now().physical == 10_000_000
        # Past half the window: the renewer saves a new limit ahead of the clock.
        manual.advance(600_000)
        for _ in range(200):
            await asyncio.sleep(0.002)
            # The ceiling rises only after the save: wait for the ceiling, then check the file.
            if clock.ceiling_physical == 11_600_000:
                break
        assert store.load() == 11_600_000 == clock.ceiling_physical
        # A jump past the ceiling is refused until extend() saves further ahead.
        manual.advance(5_000_000)
        await window.extend()
        assert clock.now().physical == 15_600_000
        await window.stop()
        assert store.load() == 15_600_000

    asyncio.run(main())
    assert saved[:2] == [11_000_000, 11_600_000]
    assert max(saved) == 16_600_000
    # stop() wrote the exact high-water mark, below the window's far end.
    assert json.loads(store.path.read_text())["limit_physical_us"] == 15_600_000


class HeldWindowStore(WindowStore):
    """The real file store, counting saves under way; once ``hold_next`` is set, the next save
    holds on in its thread until another save starts beside it (or 1 s passes)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.hold_next = False
        self.holding = threading.Event()
        self.another_started = threading.Event()
        self.under_way = 0
        self.most_under_way = 0
        self._count_lock = threading.Lock()

    def save(self, limit_physical_us: int) -> None:
        with self._count_lock:
            self.under_way += 1
            self.most_under_way = max(self.most_under_way, self.under_way)
            if self.under_way > 1:
                self.another_started.set()
            hold, self.hold_next = self.hold_next, False
        try:
            if hold:
                self.holding.set()
                self.another_started.wait(1.0)
            super().save(limit_physical_us)
        finally:
            with self._count_lock:
                self.under_way -= 1


def test_stop_waits_for_the_renewers_save_under_way(tmp_path: Path) -> None:
    """Window saves cannot race. stop() cancels the renewer in the middle of a save;
    its final save must start only once that one is over (they share one temporary file)."""
    manual = ManualClock(10_000_000)
    clock = Clock(2, physical_clock=manual, ceiling_physical=0)
    store = HeldWindowStore(tmp_path)
    window = TimestampWindow(clock, store, size_us=1_000_000, check_interval_s=0.001)

    async def main() -> None:
        await window.start()
        store.hold_next = True
        manual.advance(600_000)  # past half the window: the renewer's next check saves
        assert clock.now().physical == 10_600_000
        assert await asyncio.to_thread(store.holding.wait, 5.0)
        await window.stop()

    asyncio.run(main())
    assert store.most_under_way == 1
    assert store.load() == 10_600_000
    assert not store.path.with_name(store.path.name + ".tmp").exists()


def test_gate_deadline_is_checked_on_every_call_and_closes_reads() -> None:
    gate = ServingGate()
    changes: list[bool] = []
    gate.add_listener(lambda serving, _: changes.append(serving))
    gate.set_deadline(time.monotonic() + 60)
    assert gate.serving and gate.read_refusal() is None
    # Past the deadline the gate refuses at once, with no timer having run.
    gate.set_deadline(time.monotonic() - 0.001)
    assert gate.refusal() == LEASE_LAPSED and gate.read_refusal() == LEASE_LAPSED
    assert not gate.serving
    gate.set_deadline(None)
    assert gate.serving
    # The same block twice notifies once; blocking_keys is what a listener may read.
    gate.block("not-leader", "a follower")
    gate.block("not-leader", "a follower")
    assert gate.blocking_keys() == {"not-leader"}
    assert changes == [True, False]


def test_gate_settles_only_while_every_block_is_settling() -> None:
    gate = ServingGate()
    assert not gate.settling  # serving: nothing to hold
    gate.block("not-leader", "taking over", settling=True)
    assert gate.settling and gate.refusal() == "not-leader: taking over"
    gate.block("shutdown", "shutting down")  # final: refused at once
    assert not gate.settling
    gate.unblock("shutdown")
    assert gate.settling
    # The same message, no longer settling (a follower that now names its leader), is a change.
    version = gate.version
    gate.block("not-leader", "taking over")
    assert not gate.settling and gate.version == version + 1
    gate.block("not-leader", "electing", settling=True)
    gate.unblock("not-leader")
    assert not gate.settling and gate.serving


def test_a_held_request_returns_at_the_change_from_another_thread() -> None:
    gate = ServingGate()
    gate.block("not-leader", "taking over", settling=True)

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        held = asyncio.ensure_future(gate.hold(30.0))
        await asyncio.sleep(0.01)
        assert not held.done()
        # Leadership changes the gate on its own thread.
        await loop.run_in_executor(None, gate.unblock, "not-leader")
        await asyncio.wait_for(held, 10.0)
        # A final block ends a hold just the same (the caller then refuses).
        gate.block("not-leader", "electing", settling=True)
        held = asyncio.ensure_future(gate.hold(30.0))
        await asyncio.sleep(0.01)
        await loop.run_in_executor(None, gate.block, "not-leader", "the leader is node 2")
        await asyncio.wait_for(held, 10.0)
        # A gate that stays settling is held only for the budget.
        gate.block("not-leader", "electing", settling=True)
        await asyncio.wait_for(gate.hold(0.05), 10.0)
        return gate.settling, gate.serving

    assert asyncio.run(main()) == (True, False)


def test_admit_holds_a_settling_gate_and_refuses_a_final_block_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request is held while the gate settles, then served; a final block (here shutting down
    beside a settling one) refuses at once: with a hold of a minute, an answer within the test's
    bound means it was not held."""
    monkeypatch.setattr(handler_frame, "HOLD_MAX_S", 60.0)
    gate = ServingGate()

    async def main() -> str:
        gate.block("not-leader", "taking over", settling=True)
        held = asyncio.ensure_future(handler_frame.admit(gate))
        await asyncio.sleep(0.01)
        assert not held.done()
        gate.unblock("not-leader")
        await asyncio.wait_for(held, 10.0)  # served: no refusal raised
        gate.block("not-leader", "taking over", settling=True)
        gate.block("shutdown", "the server is shutting down")
        with pytest.raises(handler_frame.RequestError) as refused:
            await asyncio.wait_for(handler_frame.admit(gate), 10.0)
        return refused.value.message

    assert "shutdown: the server is shutting down" in asyncio.run(main())


def test_a_floor_ahead_of_the_clock_is_waited_out_to_max_offset_half() -> None:
    manual = ManualClock(10_000_000)
    clock = Clock(1, max_offset_us=500_000, physical_clock=manual)
    messages: list[str] = []

    async def main() -> bool:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.001)
                manual.advance(50_000)

        ticker = asyncio.create_task(tick())
        try:
            return await wait_out_lead(clock, 11_000_000, messages.append)
        finally:
            ticker.cancel()

    assert asyncio.run(main())
    assert lead_bound_us(clock.max_offset_us) == 250_000
    # Released once the first timestamp above the floor is at most 250 ms ahead.
    assert 11_000_001 - clock.physical_now() <= 250_000
    assert len(messages) == 1 and "1.000 s ahead" in messages[0]
    assert "within max_offset/2 (0.250 s)" in messages[0]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_serve_process_keeps_freed_memory_with_glibc() -> None:
    # Both thresholds are accepted (mallopt refuses an mmap threshold past its maximum), twice.
    assert keep_freed_memory()
    assert keep_freed_memory()
