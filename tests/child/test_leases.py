"""The heartbeat's decisions, driven with a fake clock and a fake SQS that counts calls."""

from __future__ import annotations

from supervisor.child.leases import LeaseKeeper
from supervisor.child.retry import retry_delay
from supervisor.config import RetrySettings
from supervisor.lease import Lease
from supervisor.sqs import SQS_MAX_VISIBILITY


class CountingSqs:
    def __init__(self) -> None:
        self.calls: list[list[tuple[str, int]]] = []

    def change_visibility_batch(self, url, entries):
        entries = list(entries)
        for start in range(0, len(entries), 10):
            self.calls.append([(e.key, e.visibility_timeout) for e in entries[start : start + 10]])
        return {}


def lease(message_id: str, received_at: float, visibility: int = 60) -> Lease:
    return Lease(message_id, f"rh-{message_id}", "q", 1, received_at, received_at + visibility)


def keeper(sqs, visibility=60):
    extended = []
    return LeaseKeeper(
        sqs, visibility, on_extended=lambda n, calls: extended.append((n, calls))
    ), extended


def test_nothing_is_extended_before_half_the_visibility_has_passed():
    sqs = CountingSqs()
    leases, _ = keeper(sqs)
    leases.add([lease("a", 0)])
    assert leases.run_once(now=29) == 0
    assert sqs.calls == []


def test_due_leases_are_extended_in_batches_of_ten_with_near_due_ones_coalesced():
    sqs = CountingSqs()
    leases, extended = keeper(sqs)
    leases.add([lease(f"early{i}", 0) for i in range(15)])  # due at t=30
    leases.add([lease(f"late{i}", 10) for i in range(10)])  # due at t=40, within 3/4 at t=30
    leases.add([lease("fresh", 29)])  # 59 s left at t=30: not coalesced
    assert leases.run_once(now=30) == 25
    assert [len(call) for call in sqs.calls] == [10, 10, 5]
    assert {timeout for call in sqs.calls for _, timeout in call} == {60}
    assert extended == [(25, 3)]
    # Extended leases are not extended again until half their new visibility has passed.
    assert leases.run_once(now=31) == 0


def test_a_claimed_lease_is_kept_and_unstarted_ones_are_taken_on_stop():
    sqs = CountingSqs()
    leases, _ = keeper(sqs)
    leases.add([lease("running", 0), lease("prefetched1", 0), lease("prefetched2", 0)])
    assert leases.claim("running") is not None
    taken = leases.take_unstarted()
    assert sorted(lease.message_id for lease in taken) == ["prefetched1", "prefetched2"]
    assert leases.claim("prefetched1") is None, "a released lease can no longer be started"
    assert [lease.message_id for lease in leases.held()] == ["running"]


def test_extensions_stop_at_sqs_twelve_hour_cap():
    sqs = CountingSqs()
    leases, _ = keeper(sqs, visibility=300)
    leases.add([lease("old", 0, visibility=300)])
    now = SQS_MAX_VISIBILITY - 100  # 100 s left of the 12 h a message may stay invisible
    leases._leases["old"].expires_at = now + 120
    assert leases.run_once(now=now) == 0, "cannot extend beyond what is already granted"
    leases._leases["old"].expires_at = now + 30
    assert leases.run_once(now=now) == 1
    assert sqs.calls[-1] == [("old", 99)]


def test_retry_delay_doubles_caps_and_jitters_downwards_only():
    policy = RetrySettings(base_seconds=10, max_seconds=900)
    assert [retry_delay(n, policy, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert retry_delay(20, policy, rand=lambda: 0.0) == 900
    assert retry_delay(3, policy, rand=lambda: 1.0) == 32  # 40 less 20 %
    assert retry_delay(1, policy, rand=lambda: 1.0, at_least=30) == 30  # Retry-After is a floor


def test_a_short_receive_visibility_is_extended_to_the_bindings_at_its_own_half_time():
    """A receive asks for 30 s (so a child that dies before telling the parent costs 30 s,
    not 300); jobs shorter than 15 s are never extended, longer ones get the full 300 s."""
    sqs = CountingSqs()
    leases, _ = keeper(sqs, visibility=300)
    short = Lease("m", "rh-m", "q", 1, 0, 30, timeout=30)
    leases.add([short])
    assert leases.run_once(now=14) == 0  # 16 s left of 30: not yet
    assert leases.run_once(now=16) == 1
    assert sqs.calls == [[("m", 300)]]
    assert (short.expires_at, short.timeout) == (316, 300)
    assert leases.run_once(now=160) == 0  # 156 s left of 300: the binding's half-time rule
    assert leases.run_once(now=170) == 1


class GoneSqs(CountingSqs):
    """Says every receipt is gone (the visibility lapsed and the message was received again)."""

    def change_visibility_batch(self, url, entries):
        entries = list(entries)
        super().change_visibility_batch(url, entries)
        return {e.key: "ReceiptHandleIsInvalid" for e in entries}


def test_a_gone_receipt_is_not_extended_again_and_an_unstarted_one_is_dropped():
    sqs = GoneSqs()
    leases, extended = keeper(sqs)
    leases.add([lease("running", 0), lease("waiting", 0)])
    assert leases.claim("running") is not None
    assert leases.run_once(now=30) == 0
    assert len(sqs.calls) == 1 and extended == []
    # The one not started will not run here; the running one finishes, unextended.
    assert [held.message_id for held in leases.held()] == ["running"]
    assert leases.claim("waiting") is None
    assert leases.run_once(now=45) == 0
    assert len(sqs.calls) == 1  # not tried again every tick
