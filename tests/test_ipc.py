"""The report pipe: what a child writes is what the parent reads, in either wire form.

``received``, ``deleting`` and ``deleted`` go as space-separated lines unless a field has a
space or a line break in it (or a lease carries a job type); then as JSON. Both must read
back the same. A finished job goes to the shared ``FinishedLog`` when the child has one, and
over the pipe only when the log is full.
"""

from __future__ import annotations

import os

import pytest

from supervisor.finished import FinishedLog
from supervisor.ipc import Reporter, ReportReader
from supervisor.lease import Lease

QUEUE = "http://127.0.0.1:9324/000000000000/jobs"


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    reader = ReportReader(read_fd)
    yield Reporter(write_fd), reader, read_fd
    reader.close()
    os.close(write_fd)


def raw_lines(read_fd: int) -> list[bytes]:
    return os.read(read_fd, 1 << 16).splitlines()


def lease(message_id: str, receipt: str, count: int = 1, job_type: str | None = None) -> Lease:
    held = Lease(message_id, receipt, QUEUE, count)
    held.job_type = job_type
    return held


def test_received_goes_as_a_line_and_reads_back_whole(pipe):
    reporter, reader, read_fd = pipe
    reporter.received(QUEUE, [lease("a", "AQEB+/x=", 1), lease("b", "r2", 3)], ["1700", "-"], 1900)
    reporter.received(QUEUE, [], [], 5)
    lines = raw_lines(read_fd)
    assert lines == [f"R 1900 {QUEUE} a AQEB+/x= 1 1700 b r2 3 -".encode(), f"R 5 {QUEUE}".encode()]
    reader._buffer = b"\n".join(lines) + b"\n"
    assert list(reader.read()) == [
        {"t": "received", "q": QUEUE, "ids": ["a", "b"], "receipts": ["AQEB+/x=", "r2"],
         "counts": ["1", "3"], "types": None, "sent": ["1700", "-"], "at": 1900},
        {"t": "received", "q": QUEUE, "ids": [], "receipts": [], "counts": [], "types": None,
         "sent": [], "at": 5},
    ]  # fmt: skip


@pytest.mark.parametrize(
    "held",
    [
        [lease("a", "receipt with spaces")],
        [lease("a", "line\nbreak")],
        [lease("a b", "r")],
        [lease("a", "r", job_type="thumbnail")],
    ],
    ids=["space", "newline", "id-with-space", "job-type"],
)
def test_received_falls_back_to_json_when_a_line_cannot_carry_it(pipe, held):
    reporter, reader, _ = pipe
    reporter.received(QUEUE, held, ["1700"], 1900)
    (report,) = reader.read()
    (lease_,) = held
    columns = [report[key] for key in ("ids", "receipts", "counts", "types")]
    assert columns == [[lease_.message_id], [lease_.receipt_handle], [1], [lease_.job_type]]
    assert (report["q"], report["sent"], report["at"]) == (QUEUE, ["1700"], 1900)


@pytest.mark.parametrize("message_id", ["5fa8c9e2-1d2b-4c1a-9d7e-7f0e6b9a8c01", "has space"])
def test_deleting_reads_back_in_microseconds(pipe, message_id):
    reporter, reader, _ = pipe
    reporter.deleting(message_id, 1.25)
    reporter.deleting(message_id, None)  # a duplicate: settled without running
    assert list(reader.read()) == [
        {"t": "deleting", "id": message_id, "d": 1_250_000},
        {"t": "deleting", "id": message_id, "d": None},
    ]


@pytest.mark.parametrize("second", ["5fa8c9e2-1d2b-4c1a-9d7e-7f0e6b9a8c01", "has space"])
def test_deleted_reads_back_whole(pipe, second):
    reporter, reader, _ = pipe
    reporter.deleted("succeeded", [("a", 0.5, None), (second, 2e-6, None)])
    reporter.deleted("duplicate", [("c", None, None)])
    reporter.deleted("duplicate", [])
    assert list(reader.read()) == [
        {"t": "deleted", "o": "succeeded", "ids": ["a", second], "d": [500_000, 2]},
        {"t": "deleted", "o": "duplicate", "ids": ["c"], "d": [None]},
        {"t": "deleted", "o": "duplicate", "ids": [], "d": []},
    ]


def test_with_a_finished_log_a_finished_job_stays_off_the_pipe_until_deleted():
    read_fd, write_fd = os.pipe()
    reader, finished = ReportReader(read_fd), FinishedLog(slots=2)
    reporter = Reporter(write_fd, finished)
    try:
        slots = [reporter.deleting(i, 0.25) for i in ("a", "b")]
        assert None not in slots
        assert reporter.deleting("c", 0.5) is None  # the log is full: over the pipe
        assert list(reader.read()) == [{"t": "deleting", "id": "c", "d": 500_000}]
        assert finished.read() == {"a": 0.25, "b": 0.25}

        reporter.deleted("succeeded", [("a", 0.25, slots[0])])
        deleted = {"t": "deleted", "o": "succeeded", "ids": ["a"], "d": [250_000]}
        assert list(reader.read()) == [deleted]
        assert finished.read() == {"b": 0.25}  # a's slot is free again
        assert reporter.deleting("d", None) is not None
        assert finished.read() == {"b": 0.25, "d": None}
    finally:
        reader.close()
        os.close(write_fd)
        finished.close()
