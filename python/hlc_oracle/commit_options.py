"""The group-commit scheduler's settings: :class:`CommitOptions`, the ``[commit]`` section of the
oracle's configuration (also importable from :mod:`hlc_oracle.scheduler`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hlc_oracle._core import COMMIT_DEFAULTS as _DEFAULTS
from hlc_oracle.setting import setting

__all__ = ["CommitOptions"]


@dataclass
class CommitOptions:
    """Settings of the group-commit scheduler and its log: the ``[commit]`` section of the
    oracle's configuration. Every field has a documented default; :meth:`validate` (also run on
    construction) raises ``ValueError``/``TypeError`` naming the field."""

    enabled: bool = setting(True, "serve the Transactions service (group commit) in the server")
    durability: str = setting(
        "sync",
        "sync (answer after fdatasync), async (answer after write, sync right after) or memory "
        "(no log)",
        "--commit-durability",
    )
    isolation: str = setting(
        _DEFAULTS["isolation"],
        "snapshot (write-write conflicts) or serializable (read-write too)",
    )
    log_dir: Path | None = setting(
        None, "commit log directory (unset: <server.data_dir>/commit-log in the server)"
    )
    max_batch_size: int = setting(4096, "largest number of requests decided in one log write")
    max_batch_delay_us: int = setting(
        0, "how long a batch that is not full may wait for more arrivals (0: never wait)"
    )
    max_queue: int = setting(
        100_000, "requests waiting for a batch beyond which commits get RESOURCE_EXHAUSTED"
    )
    max_keys: int = setting(
        _DEFAULTS["max_keys"], "keys the conflict detector remembers (memory bound)"
    )
    max_read_keys: int = setting(_DEFAULTS["max_read_keys"], "largest read set of one transaction")
    max_write_keys: int = setting(
        _DEFAULTS["max_write_keys"], "largest write set of one transaction"
    )
    max_key_bytes: int = setting(_DEFAULTS["max_key_bytes"], "largest key (bytes)")
    retained_decisions: int = setting(
        _DEFAULTS["retained_decisions"],
        "decided transaction ids kept for status and idempotent resubmission",
    )
    segment_size: int = setting(
        _DEFAULTS["segment_size"], "commit log segment size in bytes (rotation)"
    )
    retain_segments: int = setting(
        _DEFAULTS["retain_segments"],
        "log segments kept; older ones are checkpointed away (retention)",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(self.enabled).__name__}")
        for name in ("segment_size",):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1024:
                raise ValueError(f"{name} must be at least 1024, got {value}")
        for name in (
            "max_batch_size",
            "max_queue",
            "max_keys",
            "max_read_keys",
            "max_write_keys",
            "max_key_bytes",
            "retained_decisions",
            "retain_segments",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not isinstance(self.max_batch_delay_us, int) or self.max_batch_delay_us < 0:
            raise ValueError(
                f"max_batch_delay_us must be a non-negative int, got {self.max_batch_delay_us!r}"
            )
        if self.durability not in ("sync", "async", "memory"):
            raise ValueError(
                f'durability must be "sync", "async" or "memory", got {self.durability!r}'
            )
        if self.isolation not in ("snapshot", "serializable"):
            raise ValueError(
                f'isolation must be "snapshot" or "serializable", got {self.isolation!r}'
            )
