"""The context-manager protocol of the real things tests start (etcd members, oracle processes,
clusters of them): ``with Thing(...) as thing`` starts it, and leaves it closed (stopped by pid,
temporary data removed) on the way out, also when ``start()`` fails half way, so that nothing a
failed start launched is left running."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class StartedFixture(ABC):
    @abstractmethod
    def start(self) -> Self:
        """Starts it and waits until it is ready; returns ``self``."""

    @abstractmethod
    def close(self) -> None:
        """Stops whatever was started (safe to call when nothing or only part of it was)."""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
