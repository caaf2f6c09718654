"""A pure-Python model of group commit: the reference for the scheduler's decisions.

Per batch, in request order: a request is a commit of ``(txn_id, start, reads, writes)`` or an
abort of an id. An id already decided (in an earlier batch, or earlier in this one) gets its
first decision back. New commits are checked first-committer-wins against the history (last
commit of each written key) and the earlier accepted commits of the batch; accepted ones get
increasing commit numbers, and are recorded only after the whole batch is decided. An abort of an
undecided id records "requested". Snapshot isolation only checks writes; serializable checks reads
too. Commit "timestamps" are the model's own counter: tests compare their order, not values.
"""

from dataclasses import dataclass

ModelAnswer = tuple[
    str, object
]  # ("committed", n) | ("conflict", (kind, key, lost)) | ("requested", None)


@dataclass(frozen=True)
class ModelCommit:
    txn_id: int
    start: int
    reads: tuple[bytes, ...]
    writes: tuple[bytes, ...]


ModelRequest = ModelCommit | int


class GroupCommitModel:
    def __init__(self, isolation: str = "snapshot") -> None:
        self.serializable = isolation == "serializable"
        self.last_commit: dict[bytes, int] = {}
        self.decisions: dict[int, ModelAnswer] = {}
        self.counter = 0

    def _conflict(
        self, txn: ModelCommit, batch_writes: dict[bytes, int]
    ) -> tuple[str, bytes, tuple[str, int]] | None:
        sets = [("write-write", txn.writes)]
        if self.serializable:
            sets.append(("read-write", txn.reads))
        for kind, keys in sets:
            for key in keys:
                last = self.last_commit.get(key)
                if last is not None and last > txn.start:
                    return (kind, key, ("commit", last))
                if key in batch_writes:
                    return (kind, key, ("batch", batch_writes[key]))
        return None

    def process(self, requests: list[ModelRequest]) -> list[ModelAnswer]:
        answers: list[ModelAnswer] = []
        decided_now: dict[int, ModelAnswer] = {}
        batch_writes: dict[bytes, int] = {}
        to_record: list[tuple[ModelCommit, int]] = []
        for request in requests:
            txn_id = request if isinstance(request, int) else request.txn_id
            known = self.decisions.get(txn_id) or decided_now.get(txn_id)
            if known is not None:
                answers.append(known)
                continue
            answer: ModelAnswer
            if isinstance(request, int):
                answer = ("requested", None)
            else:
                conflict = self._conflict(request, batch_writes)
                if conflict is None:
                    self.counter += 1
                    answer = ("committed", self.counter)
                    for key in request.writes:
                        batch_writes[key] = request.txn_id
                    to_record.append((request, self.counter))
                else:
                    answer = ("conflict", conflict)
            decided_now[txn_id] = answer
            answers.append(answer)
        for txn, commit in to_record:
            for key in txn.writes:
                self.last_commit[key] = max(self.last_commit.get(key, 0), commit)
        self.decisions.update(decided_now)
        return answers
