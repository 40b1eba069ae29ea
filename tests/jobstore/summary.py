"""Summary lines that say which job-store backends ran, and against what.

A backend whose server cannot be had here is skipped, and the summary says so in capitals: a
green run that silently skipped PostgreSQL would claim more than it tested.

A plugin (named in tests/conftest.py), not a hook of tests/jobstore/conftest.py: with
pytest-xdist the tests run in workers and the summary is printed by the controller, which
never collects, so never loads that conftest. The servers are started in the workers; each
job-store report carries what its worker knows of them, and the controller merges that.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
servers: dict[str, str] = {}  # backend -> what it ran against (filled by the fixtures)
not_run: dict[str, str] = {}  # backend -> why not
_outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "backend" in callspec.params:
            item.user_properties.append(("jobstore_backend", callspec.params["backend"]))
        elif item.path.name == "test_postgresql.py":
            item.user_properties.append(("jobstore_backend", "postgresql-only"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if "jobstore_backend" in dict(report.user_properties):
        # A new list: pytest hands the item's own list to every phase's report.
        report.user_properties = [
            *report.user_properties,
            ("jobstore_servers", dict(servers)),
            ("jobstore_not_run", dict(not_run)),
        ]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    properties = dict(report.user_properties)
    backend = properties.get("jobstore_backend")
    if backend is None:
        return
    servers.update(properties.get("jobstore_servers", {}))
    not_run.update(properties.get("jobstore_not_run", {}))
    if report.when == "call" or report.outcome != "passed":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.when != "call" and report.failed:
            outcome = "error"
        else:
            outcome = report.outcome
        _outcomes[str(backend)][outcome] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _outcomes and not not_run:
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", "job stores by backend")
    for backend, counts in sorted(_outcomes.items()):
        server = servers.get(backend.removesuffix("-only"))
        write(f"{backend}: {_tally(counts)}" + (f" against {server}" if server else ""))
    for backend, why in sorted(not_run.items()):
        name = "PostgreSQL" if backend == "postgresql" else backend
        write(f"{name} job-store contract NOT run: {why}", red=True, bold=True)
    if "postgresql" in servers:
        tally = _tally(_outcomes["postgresql"])
        write(f"PostgreSQL contract suite: {tally} against {servers['postgresql']}")
        if "postgresql-only" in _outcomes:
            tally = _tally(_outcomes["postgresql-only"])
            write(f"PostgreSQL-only tests (outage and reconnect, schema, fork): {tally}")


def _tally(counts: Counter[str]) -> str:
    return ", ".join(f"{counts[outcome]} {outcome}" for outcome in OUTCOMES if counts[outcome])
