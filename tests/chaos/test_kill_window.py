"""The unreported-receive window: after a child is SIGKILLed, none of its messages stays hidden
much longer than ``receive_visibility_timeout``, though ``visibility_timeout`` is 300 s.

A child killed after SQS answered its receive but before it told the parent leaves those
messages hidden until the receive's own visibility lapses: the parent cannot release what it
never heard of (what it did hear of, it releases at once). A receive asks for the short
``receive_visibility_timeout``; the heartbeat extends a lease to ``visibility_timeout`` only
at the lease's half-time. So the longest hidden time after a kill is bounded by it, not by
``visibility_timeout``.

Children of one binding are killed one at a time at random moments during a steady drain
(harness.run_kills: every SQS answer 0.4 s late, which widens the window so random kills land
in it; a second binding of the queue is never killed and receives whatever comes back). For
each message a killed child held unfinished: the time from that kill to the message's next
receive, as the proxy saw SQS answer it.

CI runs it with ``receive_visibility_timeout: 5`` (a 30 s wait per kill is too long for CI);
the full variant runs the default (30 s), as the issue asks (at most 35 s)::

    CHAOS_FULL=1 python -m pytest tests/chaos/test_kill_window.py -q -s -n 0
"""

from __future__ import annotations

import os

import pytest

from .harness import run_kills

FULL = os.environ.get("CHAOS_FULL")
RECEIVE_VISIBILITY = 30 if FULL else 5  # 30 is the default: FULL leaves the key out
MARGIN = 5 if FULL else 3  # a long poll (1 s) to see it back, and a loaded 2-core machine


@pytest.mark.slow
def test_a_killed_childs_messages_are_hidden_no_longer_than_the_receive_visibility(
    sqs, sqs_endpoint, tmp_path
):
    run = run_kills(
        sqs,
        int(sqs_endpoint.rsplit(":", 1)[1]),
        tmp_path,
        messages=1500 if FULL else 600,
        kill_seconds=60 if FULL else 20,
        receive_visibility_timeout=None if FULL else RECEIVE_VISIBILITY,
        visibility_timeout=300,
        deadline=240 if FULL else 50,
        seed=20261202,
    )
    window = run.window
    print(
        f"\nkill window: {run.messages} messages, {len(run.kills)} kills, "
        f"{len(window.hidden)} messages back after a kill: hidden max {window.longest():.1f} s,"
        f" p99 {window.quantile(0.99):.1f} s, p50 {window.quantile(0.5):.1f} s, "
        f"{window.longer_than(RECEIVE_VISIBILITY / 2)} longer than "
        f"{RECEIVE_VISIBILITY / 2:g} s (received, not yet reported); {run.ran_twice} ran twice;"
        f" {run.seconds:.0f} s"
    )
    assert run.exit_code == 0
    assert run.lost == 0, f"{run.lost} message(s) never handled"
    assert window.unexplained == [], "received again with no kill in between"
    assert window.longest() <= RECEIVE_VISIBILITY + MARGIN, sorted(
        round(h.seconds, 1) for h in window.hidden
    )[-10:]
    # The kills did land in the window (else the bound above was never put to the test): some
    # messages were back only after their receive visibility, the rest at once, released.
    assert window.longer_than(RECEIVE_VISIBILITY / 2) >= 1
    assert window.longer_than(RECEIVE_VISIBILITY / 2) < len(window.hidden)
