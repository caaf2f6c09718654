"""Followers depose a leader whose process is gone at once, instead of waiting out its lease.

The lease alone replaces a killed leader only once etcd expires it: at the kill the lease has
between two thirds of the TTL and the whole TTL left (keepalives go every TTL/3), and etcd's
lessor looks for expired leases every 500 ms; about a second with a 1 s TTL, several with the
default 3 s (PD waits the same way). A follower sees a dead process much sooner:

- while it follows a leader, it holds one TCP connection to the leader's advertised address,
  purely as a liveness signal (nothing is sent on it; whatever the leader sends is discarded);
- when that connection breaks (the kernel of a killed process closes its sockets at once), it
  connects again at once, with a short timeout (:data:`PROBE_TIMEOUT_S`);
- **connection refused** on that address, after this follower had connected to it while
  following this leader, means no process listens there any more: the leader is gone. The
  follower then deletes the leader key in one txn that compares the key's create revision (the
  epoch it follows) and lease with what it read (:meth:`.election.Election.depose`); its watch
  sees the deletion and every follower campaigns, as after a lease expiry. Several followers
  racing: the compare lets one through, the others' fail harmlessly; a key already deleted by a
  resigning leader, or already won again, fails the compare the same way.

Why this is safe:

- a dead process hands out nothing: everything it handed out was returned before it died, so
  before anyone takes over, and lies below its saved window limit, the next leader's floor;
- a live leader never refuses on its port: the server binds and listens before the node joins
  the cluster, and a graceful stop deletes the leader key (resigns) before it closes the
  listener; a SIGSTOPped process still accepts connections (the kernel completes the handshake);
- every write a leader makes is fenced on its epoch (:mod:`.fence`), so even a wrong guess cannot
  make a deposed leader's commit durable: its next write fails and it stops serving; and a leader
  watches its own key, so it stops serving as soon as the delete reaches it (below).

The one assumption: the advertised address reaches the node's own listening socket, with nothing
in between that could refuse while the node lives: a proxy, a load balancer, a Service address
with no ready endpoint, or a firewall rule that rejects (iptables' ``REJECT`` answers with an
ICMP port-unreachable, which a connect reports as a refusal; ``DROP`` is a timeout, harmless).
A live leader deposed on such a refusal learns it from its own watch of the leader key
(:meth:`.election.Election.wait_for_end_of_term`): it blocks its gate and steps down when etcd's
delete event reaches it, about when the followers' watches report the same delete and they start to
campaign. Before that event it may still serve from its window. The next leader serves only after
its campaign, a read of the saved window and a fenced window save (several etcd round trips after
its own event), so the two overlap only when the old leader's event comes that much later: its
process stalled (a GC or scheduling pause, an overloaded host), or its watch stream was broken and
is being re-established (then the read of the key that precedes the new watch, its next fenced
write, about every 100 ms, or its lease deadline stops it, whichever comes first). In such an
overlap timestamps stay unique (the next leader starts above the saved window limit, and node ids
differ), but real-time order across the two could break. The watch narrows that window from "until
the next fenced write" to "until the watch event reaches the old leader"; it does not close it.
Where the assumption does not hold, set ``cluster.depose_dead_leader = false``. An address that
this follower has never connected to (it names another container's loopback, say) is never taken as
proof.

What still waits for the lease: a host that crashed or lost power (no RST: the connection hangs
and a probe times out), a network partition (timeouts and unreachable hosts prove nothing), a
paused process (SIGSTOP: it accepts connections), an address that does not resolve (a deleted
pod's name), and a hostname that resolves to several addresses.

Why plain TCP and not a gRPC stream: it needs no credentials for a leader serving TLS or mutual
TLS, and a refused connect is the proof either way. Cost: one idle TCP connection from each
follower to the leader. A gRPC server closes a connection that never sends the HTTP/2 preface
after a minute (GOAWAY ``settings_timeout``; a TLS handshake that never starts, after two), and the
follower connects again at once (a successful connect proves the leader alive). Attempts that
fail for another reason than a refusal back off to :data:`MAX_RETRY_PAUSE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from hlc_oracle.addresses import split_host_port

#: A probe's TCP connect that takes longer proves nothing (the host is down or cut off).
PROBE_TIMEOUT_S = 0.2
#: First pause after an attempt that proved nothing; it doubles up to :data:`MAX_RETRY_PAUSE_S`.
RETRY_PAUSE_S = 0.05
MAX_RETRY_PAUSE_S = 1.0
#: Least time between two connects to one leader once two connections in a row ended at once: a
#: listener that accepts and closes every connection (not a gRPC server) must not make the loop
#: spin. The first connection that ends at once is followed by a connect at once: a killed
#: process's listener can still complete one last handshake while the process exits, and that
#: connection is reset when the listener goes (then the next connect is refused).
MIN_CONNECT_INTERVAL_S = 0.05
#: Bytes read at a time from the held connection (discarded).
READ_SIZE = 65536


async def _hold(reader: asyncio.StreamReader) -> None:
    """Returns when the connection ends (EOF, reset, or any other error)."""
    with contextlib.suppress(OSError):
        while await reader.read(READ_SIZE):
            pass


async def wait_until_refused(
    address: str,
    *,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
    retry_pause_s: float = RETRY_PAUSE_S,
    on_connected: Callable[[bool], None] = lambda connected: None,
) -> None:
    """Holds a TCP connection to ``address``; returns once a connect to it is refused after an
    earlier connect to it succeeded (see the module docstring), and runs until cancelled
    otherwise. ``on_connected`` hears when the connection is made (``True``) and when it ends.
    Raises :class:`ValueError` when ``address`` is not ``host:port``."""
    parsed = split_host_port(address)
    if parsed is None:
        raise ValueError(f"leader address {address!r} is not host:port (port 1..65535)")
    host, port = parsed
    reached = False
    pause = retry_pause_s
    last_attempt = float("-inf")
    quick_ends = 0  # connections in a row that ended within MIN_CONNECT_INTERVAL_S
    while True:
        if quick_ends >= 2:
            await asyncio.sleep(max(0.0, last_attempt + MIN_CONNECT_INTERVAL_S - time.monotonic()))
        last_attempt = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), probe_timeout_s
            )
        except ConnectionRefusedError:
            if reached:
                return
            # Never reached from here: this address is not proof of anything.
        except (OSError, TimeoutError):
            pass  # unreachable, unresolvable, slow: not proof either
        else:
            reached = True
            pause = retry_pause_s
            on_connected(True)
            try:
                await _hold(reader)
            finally:
                writer.close()
                on_connected(False)
            quick = time.monotonic() - last_attempt < MIN_CONNECT_INTERVAL_S
            quick_ends = quick_ends + 1 if quick else 0
            continue  # broken: probe at once
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_RETRY_PAUSE_S)
