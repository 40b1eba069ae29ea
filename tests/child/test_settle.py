"""How a child settles deletes that fail: retry what may succeed, settle what never will."""

from __future__ import annotations

import os

from supervisor.child.hooks import NoJobHooks
from supervisor.child.leases import LeaseKeeper
from supervisor.child.settle import Settler
from supervisor.config import Binding
from supervisor.finished import FinishedLog
from supervisor.ipc import Reporter, ReportReader
from supervisor.lease import Lease


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
    leases = LeaseKeeper(sqs, 60)
    settler = Settler(
        Binding(name="b", queue="q", handler="m:f"),
        "q",
        sqs,
        leases,
        Reporter(write_fd, finished := FinishedLog()),
        NoJobHooks(),
    )
    held = [Lease(mid, f"rh-{mid}", "q", 1, 0, 60) for mid in ("ok", "gone", "later")]
    leases.add(held)
    for lease in held:
        settler.succeeded(lease, 0.01)
    assert finished.read() == dict.fromkeys(("ok", "gone", "later"), 0.01)

    settler.flush_deletes(force=True)

    assert [lease.message_id for lease in settler.pending] == ["later"]
    # Still finished and not deleted: were the child killed now, the parent would delete it.
    assert finished.read() == {"later": 0.01}
    finished.close()
    os.close(write_fd)
    reports = list(ReportReader(read_fd).read())
    # (Each finished job went to the finished log, not the pipe.)
    [done] = reports
    assert (done["t"], done["o"], sorted(done["ids"])) == (
        "deleted",
        "succeeded",
        ["gone", "ok"],
    )
    assert [lease.message_id for lease in leases.held()] == ["later"]
