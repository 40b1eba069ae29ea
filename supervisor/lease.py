"""The one Lease type: a received message whose visibility a child owns until it settles.

Child and parent hold the same shape. The child's LeaseKeeper extends ``expires_at`` and marks
``started``; the parent keeps a copy per child (from the ``received`` report) so it can release
a dead child's messages at once with their receipt handles.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.sqs import BatchEntry

# On the wire (the ``received`` report): [message id, receipt handle, receive count], and the
# job type label on a binding that routes by type.
WireLease = list


@dataclass(slots=True)
class Lease:
    message_id: str
    receipt_handle: str
    queue_url: str
    receive_count: int
    received_at: float = 0.0  # monotonic
    expires_at: float = 0.0  # monotonic: when the visibility lapses unless extended
    started: bool = False  # the handler has begun (a stop no longer releases it)
    finished: bool = False  # the handler has returned; its settle is under way
    job_type: str | None = None  # the job type's metric label, on a binding with handlers:
    timeout: int = 0  # the visibility its receive or last extension set (0: the binding's)

    def entry(self, visibility_timeout: int = 0) -> BatchEntry:
        return BatchEntry(self.message_id, self.receipt_handle, visibility_timeout)

    def wire(self) -> WireLease:
        item = [self.message_id, self.receipt_handle, self.receive_count]
        return item if self.job_type is None else [*item, self.job_type]

    @classmethod
    def from_wire(cls, item: WireLease, queue_url: str, now: float) -> Lease:
        if len(item) == 3:  # no job type: the usual case, without unpacking into a list
            return cls(item[0], item[1], queue_url, item[2], now, now)
        message_id, receipt_handle, receive_count, job_type = item
        return cls(
            message_id, receipt_handle, queue_url, receive_count, now, now, job_type=job_type
        )
