"""How a worker settles deletes that fail: retry what may succeed, settle what never will."""

from __future__ import annotations

import json
import os

from supervisor.child.leases import Lease, LeaseKeeper
from supervisor.child.worker import Worker, _Pending
from supervisor.config import Binding, SqsSettings
from supervisor.ipc import Reporter


class RefusingSqs:
    """Deletes fail: one receipt is gone, one call hits an unavailable endpoint."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        self.deleted: list[list[str]] = []

    def delete_batch(self, url, entries):
        keys = [e.key for e in entries]
        self.deleted.append(keys)
        return {k: self.errors[k] for k in keys if k in self.errors}


def test_a_gone_receipt_is_settled_and_an_unavailable_delete_is_kept_for_a_retry():
    read_fd, write_fd = os.pipe()
    sqs = RefusingSqs({"gone": "ReceiptHandleIsInvalid", "later": "ServiceUnavailable"})
    worker = Worker(
        Binding(name="b", queue="q", handler="m:f"),
        lambda m, c: None,
        Reporter(write_fd),
        SqsSettings(),
        parent_pid=os.getppid(),
    )
    worker.sqs, worker.queue_url = sqs, "q"
    worker.leases = LeaseKeeper(sqs, 60)
    leases = [Lease(mid, f"rh-{mid}", "q", 0, 60, 1) for mid in ("ok", "gone", "later")]
    worker.leases.add(leases)
    worker._pending = [_Pending(lease, 0.01) for lease in leases]

    worker.flush_deletes(force=True)

    assert [p.lease.message_id for p in worker._pending] == ["later"]
    os.close(write_fd)
    reports = [json.loads(line) for line in os.read(read_fd, 65536).decode().splitlines()]
    [done] = [r for r in reports if r["t"] == "done"]
    assert (done["o"], sorted(m for m, _ in done["m"])) == ("succeeded", ["gone", "ok"])
    assert [lease.message_id for lease in worker.leases.held()] == ["later"]
