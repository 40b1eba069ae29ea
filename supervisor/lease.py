"""The one Lease type: a received message whose visibility a child owns until it settles.

The child's LeaseKeeper holds Leases, extends ``expires_at`` and marks ``started``. The parent
keeps what it needs of each (from the ``received`` report) so it can release a dead child's
messages at once with their receipt handles: a ``HeldLease`` tuple per message, made into a
Lease only when it releases one.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.sqs import BatchEntry

# The parent's copy of a lease, keyed by message id: (receipt handle, receive count as the
# report carried it, queue URL, job type label or None). The parent holds every message of
# every child and touches most only twice (received, deleted), so it keeps tuples that zip
# builds from the report's columns, not an object per message.
HeldLease = tuple[str, str | int, str, str | None]


@dataclass(slots=True)
class Lease:
    message_id: str
    receipt_handle: str
    queue_url: str
    receive_count: int
    received_at: float = 0.0  # monotonic
    expires_at: float = 0.0  # monotonic: when the visibility lapses unless extended
    timeout: int = 0  # the visibility its receive or last extension set (0: the binding's)
    started: bool = False  # the handler has begun (a stop no longer releases it)
    finished: bool = False  # the handler has returned; its settle is under way
    job_type: str | None = None  # the job type's metric label, on a binding with handlers:
    # Once finished, while it waits for the batched delete (the Settler's ``pending``):
    duration: float | None = None  # the handler's run time (None: a duplicate, not run)
    outcome: str = "succeeded"  # or "duplicate"
    finished_at: float = 0.0  # monotonic: the delete flush is due DELETE_FLUSH_SECONDS after
    slot: int | None = None  # its slot in the shared finished log, if it had room

    def entry(self, visibility_timeout: int = 0) -> BatchEntry:
        return BatchEntry(self.message_id, self.receipt_handle, visibility_timeout)

    @classmethod
    def from_held(cls, message_id: str, held: HeldLease) -> Lease:
        receipt_handle, receive_count, queue_url, job_type = held
        return cls(message_id, receipt_handle, queue_url, int(receive_count), job_type=job_type)
