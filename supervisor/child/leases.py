"""The leases a child holds, and the heartbeat that keeps them from lapsing.

A lease is a received message whose visibility timeout this child owns. The heartbeat thread
extends every lease when half its visibility is left, batching whatever else falls due within
the next quarter period into the same ChangeMessageVisibilityBatch call, so a long job runs
once and the call rate stays near one per ten held messages per half period. Nothing is
extended past SQS's 12-hour cap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from supervisor.lease import Lease
from supervisor.sqs import RECEIPT_GONE, SQS_MAX_VISIBILITY, SqsClient

log = logging.getLogger("sqs_supervisor.leases")

Clock = Callable[[], float]


class LeaseKeeper:
    """Thread-safe lease table plus the heartbeat that extends it."""

    def __init__(
        self,
        sqs: SqsClient,
        visibility_timeout: int,
        *,
        on_extended: Callable[[int, int], None] = lambda messages, requests: None,
        on_tick: Callable[[], None] = lambda: None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._sqs = sqs
        self._visibility = visibility_timeout
        self._on_extended = on_extended
        self._on_tick = on_tick
        self._clock = clock
        self._leases: dict[str, Lease] = {}
        self._gone: set[str] = set()  # receipts SQS no longer honours: never extended again
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Tick often enough that a short visibility timeout is still extended in time.
        self.interval = max(0.2, min(1.0, visibility_timeout / 8))

    # -- the table ----------------------------------------------------------------------------

    def add(self, leases: Iterable[Lease]) -> None:
        with self._lock:
            self._leases.update((lease.message_id, lease) for lease in leases)

    def drop(self, message_ids: Iterable[str]) -> None:
        with self._lock:
            for message_id in message_ids:
                self._leases.pop(message_id, None)

    def claim(self, message_id: str) -> Lease | None:
        """Mark a lease as started, unless it was already released; atomic with ``take``."""
        with self._lock:
            lease = self._leases.get(message_id)
            if lease is not None:
                lease.started = True
            return lease

    def finish(self, message_id: str) -> Lease | None:
        """The handler returned: the lease, marked so ``abandon`` leaves it to its settle; None
        if the job was abandoned (timed out) or released meanwhile: its result is void."""
        with self._lock:
            lease = self._leases.get(message_id)
            if lease is not None:
                lease.finished = True
            return lease

    def abandon(self, message_id: str) -> Lease | None:
        """Take a running job's lease from under it (it overran its timeout), unless it has
        already finished; nobody extends it after this."""
        with self._lock:
            lease = self._leases.get(message_id)
            if lease is None or lease.finished:
                return None
            return self._leases.pop(message_id)

    def take_unstarted(self) -> list[Lease]:
        """Remove and return the leases whose handler has not started."""
        with self._lock:
            unstarted = [lease for lease in self._leases.values() if not lease.started]
            for lease in unstarted:
                del self._leases[lease.message_id]
            return unstarted

    def take(self, message_ids: Iterable[str]) -> list[Lease]:
        """Remove and return those of these leases still held."""
        with self._lock:
            return [
                lease
                for lease in (self._leases.pop(mid, None) for mid in message_ids)
                if lease is not None
            ]

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def __len__(self) -> int:
        return len(self._leases)

    def _length(self, lease: Lease) -> float:
        return lease.timeout or self._visibility

    # -- the heartbeat ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next heartbeat step now (a stop request wants prefetched leases released)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._on_tick()
                self.run_once()
            except Exception:  # a heartbeat that dies silently would let every lease lapse
                log.exception("heartbeat step failed; retrying next tick")

    def run_once(self, now: float | None = None) -> int:
        """Extend the leases that are due; returns how many were extended."""
        now = self._clock() if now is None else now
        due = self._due(now)
        if not due:
            return 0
        extended = requests = 0
        by_queue: dict[str, list[tuple[Lease, int]]] = {}
        for lease, timeout in due:
            by_queue.setdefault(lease.queue_url, []).append((lease, timeout))
        for queue_url, items in by_queue.items():
            entries = [lease.entry(timeout) for lease, timeout in items]
            requests += -(-len(entries) // 10)  # ChangeMessageVisibilityBatch takes 10 a call
            errors = self._sqs.change_visibility_batch(queue_url, entries)
            gone = {key for key, code in errors.items() if code in RECEIPT_GONE}
            with self._lock:
                for lease, timeout in items:
                    if lease.message_id not in errors and lease.message_id in self._leases:
                        lease.expires_at, lease.timeout = now + timeout, timeout
                        extended += 1
                    elif lease.message_id in gone:
                        self._lose(lease)
            if gone:
                log.warning(
                    "%d message(s) could not be extended: the receipt is gone (the visibility"
                    " lapsed, and another consumer may run them); no longer extended, and"
                    " dropped if not started",
                    len(gone),
                )
            other = set(errors) - gone
            if other and (still_held := {lease.message_id for lease in self.held()} & other):
                log.warning("could not extend visibility of %d message(s)", len(still_held))
        if extended:
            self._on_extended(extended, requests)
        return extended

    def _lose(self, lease: Lease) -> None:
        """Under the lock: SQS no longer holds ``lease``'s message for us. One not started is
        dropped (it will not run here); a running one finishes, but is not extended again."""
        if lease.started:
            self._gone.add(lease.message_id)
        else:
            self._leases.pop(lease.message_id, None)

    def _due(self, now: float) -> list[tuple[Lease, int]]:
        """Leases at half their visibility or less; if any, also those within three quarters.

        A lease's visibility is what its receive or last extension set: a receive asks for a
        short one (``receive_visibility_timeout``), the first extension gives the binding's.
        """
        with self._lock:
            self._gone &= self._leases.keys()
            leases = [lease for key, lease in self._leases.items() if key not in self._gone]
        if not any(lease.expires_at - now <= self._length(lease) / 2 for lease in leases):
            return []
        due = []
        for lease in leases:
            if lease.expires_at - now > self._length(lease) * 3 / 4:
                continue
            # SQS refuses to keep a message invisible for more than 12 h after its receive.
            allowed = int(lease.received_at + SQS_MAX_VISIBILITY - now) - 1
            timeout = min(self._visibility, allowed)
            if timeout > lease.expires_at - now:
                due.append((lease, timeout))
        return due
