"""Starting a real child: fork, shed the parent's state, run a Worker, never return.

The parent is single-threaded when it forks (so no lock is copied mid-use), and handler
modules were imported before the first fork (gunicorn's preload), so children share their
pages. A child ends with ``os._exit``: it never falls back into the parent's code.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from supervisor.child.worker import Worker
from supervisor.config import Binding, Config
from supervisor.errors import EXIT_RUNTIME
from supervisor.finished import FinishedLog
from supervisor.ipc import Reporter
from supervisor.observe.logs import set_log_context

log = logging.getLogger("sqs_supervisor.arbiter")


class Forker:
    """The pool's spawner: ``(binding, slot, finished log) -> (pid, read end of the report
    pipe)``; the child writes the log the pool made for it."""

    def __init__(
        self,
        config: Callable[[], Config],
        parent_pid: int,
        shed_parent: Callable[[], None],
    ) -> None:
        self.config = config
        self.parent_pid = parent_pid
        self.shed_parent = shed_parent  # closes the parent's fds, resets its signal handlers

    def __call__(self, binding: Binding, slot: int, finished: FinishedLog) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child never returns from here
            code = EXIT_RUNTIME
            try:
                os.close(read_fd)
                self.shed_parent()
                set_log_context(binding=binding.name)
                config = self.config()
                worker = Worker(
                    binding,
                    config.handlers[binding.name],
                    Reporter(write_fd, finished),
                    config.sqs,
                    parent_pid=self.parent_pid,
                    jobs=config.jobs,
                )
                code = worker.run()
            except BaseException:
                log.exception("worker crashed")
            finally:
                os._exit(code)
        os.close(write_fd)
        return pid, read_fd
