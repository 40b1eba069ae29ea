"""The finished log: what a child records there is what the parent reads once it is gone.

It stands in for one pipe report per finished job. A real fork shares it, a slot is freed
when its delete went through, and a slot a kill left half written is never read as finished.
"""

from __future__ import annotations

import os
import signal

from supervisor.finished import MAX_ID_BYTES, SLOT_BYTES, FinishedLog


def test_a_forked_child_writes_what_the_parent_reads_after_reaping_it():
    finished = FinishedLog()
    try:
        pid = os.fork()
        if pid == 0:  # the child: two finished, one of them deleted, then killed
            try:
                kept = finished.add("5fa8c9e2-1d2b-4c1a-9d7e-7f0e6b9a8c01", 1_500_000)
                gone = finished.add("deleted-already", 10)
                duplicate = finished.add("duplicate", None)
                assert None not in (kept, gone, duplicate)
                finished.remove(gone)
                os.kill(os.getpid(), signal.SIGKILL)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status)
        assert finished.read() == {
            "5fa8c9e2-1d2b-4c1a-9d7e-7f0e6b9a8c01": 1.5,
            "duplicate": None,
        }
    finally:
        finished.close()


def test_a_full_log_and_an_id_too_long_are_refused_so_the_caller_uses_the_pipe():
    finished = FinishedLog(slots=1)
    try:
        assert finished.add("x" * (MAX_ID_BYTES + 1), 1) is None
        slot = finished.add("x" * MAX_ID_BYTES, 1)
        assert slot == 0
        assert finished.add("b", 1) is None
        finished.remove(slot)
        assert finished.add("b", 1) == 0
        assert finished.read() == {"b": 1e-6}
    finally:
        finished.close()


def test_a_slot_written_but_not_yet_marked_used_is_not_finished():
    """A child killed between writing a slot and marking it leaves it like this."""
    finished = FinishedLog(slots=2)
    try:
        finished.add("whole", 5)
        slot = finished.add("torn", 5)
        assert slot == 1
        finished._map[slot * SLOT_BYTES] = 0  # as before add()'s last write
        assert finished.read() == {"whole": 5e-6}
    finally:
        finished.close()


def test_a_closed_log_records_nothing():
    finished = FinishedLog(slots=1)
    finished.close()
    assert finished.add("a", 1) is None
    assert finished.read() == {}
    finished.close()  # twice is harmless
