"""Who should campaign, and when: healthy candidates first.

Two rules, asked before every campaign (:class:`~hlc_oracle.cluster.node.ClusterNode`):

- **Clock health.** A node whose clock is far from a majority of its peers
  (:mod:`hlc_oracle.skew.peers`) does not campaign, and a leader that turns far resigns. The
  check is a callable that returns the reason (naming the offsets), or ``None``.
- **Prefer candidates that can serve at once.** A new leader's clock floor is the saved window
  limit, and it serves only once that floor is within max_offset/2 of its own clock (the HLC
  bound, :func:`~hlc_oracle.node.window.wait_out_lead`). A candidate whose clock is behind the
  saved limit by more than that would win and then wait, stretching the failover gap. So it
  defers its campaign by the time it would have to wait (at most :data:`MAX_DEFER_S`) while
  another live member could serve at once: one whose clock, by the peers check's estimate, is
  within max_offset/2 of the saved limit (a member not measured counts as able). That peer
  campaigns at once and wins; if none does, this node campaigns after the deferral, having
  waited out most of the lead already. When every candidate lags alike (a window larger than
  max_offset/2, or a leader whose clock ran ahead), nobody defers: waiting for one another would
  only add to the wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hlc_oracle import Clock
from hlc_oracle.node.window import lead_bound_us

#: Longest deferral of a lagging candidate's campaign (seconds): past it, it campaigns anyway.
MAX_DEFER_S = 5.0


@dataclass(frozen=True)
class Deferral:
    """How long to defer a campaign, and why (for the follower's not-serving message)."""

    seconds: float
    reason: str


async def campaign_deferral(
    clock: Clock, saved_limit_us: int | None, count_ready_peers: Callable[[int], Awaitable[int]]
) -> Deferral:
    """The deferral of a candidate with ``clock`` and the saved window limit: zero when it could
    serve at once, or when no other live member could (``count_ready_peers(lead_us)``, given
    this node's lead to wait out, asked only when it lags: one etcd read)."""
    if saved_limit_us is None:
        return Deferral(0.0, "")
    bound = lead_bound_us(clock.max_offset_us)
    lead = saved_limit_us + 1 - clock.physical_now()
    if lead <= bound:
        return Deferral(0.0, "")
    live_peers = await count_ready_peers(lead)
    if live_peers == 0:
        return Deferral(0.0, "")
    seconds = min((lead - bound) / 1e6, MAX_DEFER_S)
    return Deferral(
        seconds,
        f"the saved timestamp limit is {lead / 1e6:.3f} s ahead of this node's clock (more than "
        f"max_offset/2, {bound / 1e6:.3f} s): deferring its campaign {seconds:.3f} s so that one "
        f"of the {live_peers} other live node(s) that can serve at once takes over",
    )


def can_serve_at_once(lead_us: int, peer_offset_us: int | None, max_offset_us: int) -> bool:
    """Whether a peer ``peer_offset_us`` away (peer - local; ``None``: not measured, counted as
    able) would be within max_offset/2 of a saved limit ``lead_us`` ahead of this node's clock."""
    return peer_offset_us is None or lead_us - peer_offset_us <= lead_bound_us(max_offset_us)
