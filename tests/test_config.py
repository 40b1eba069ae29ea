"""Config validation: every user mistake is one clear error naming file, line and key path."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.cli.main import main
from supervisor.config import load_config
from supervisor.errors import ConfigError

APPS = str(Path(__file__).parent / "apps")

GOOD = """\
sqs:
  region: us-east-1
defaults:
  processes: 3
  retry: {base_seconds: 5}
bindings:
  - name: articles
    queue: articles
    handler: handlers.examples:generate_article
    retry: {max_seconds: 60}
  - name: images
    queue: images
    handler: handlers.examples:make_thumbnail
    processes: 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "workers.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_are_merged_under_each_binding_and_nested_keys_merge(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    articles, images = config.bindings
    assert (articles.processes, images.processes) == (3, 1)
    assert (articles.retry.base_seconds, articles.retry.max_seconds) == (5, 60)
    assert (images.retry.base_seconds, images.retry.max_seconds) == (5, 900)
    assert config.handlers["articles"].__name__ == "generate_article"


def test_environment_variables_are_expanded_with_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("QUEUE_PREFIX", "prod")
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    config = load_config(
        write(
            tmp_path,
            """\
            sqs: {endpoint_url: "${NO_SUCH_VAR:-}"}
            metrics: {port: "${NO_SUCH_VAR:-9200}"}
            bindings:
              - {name: a, queue: "${QUEUE_PREFIX}-articles", handler: "handlers.examples:flaky"}
            """,
        )
    )
    assert config.sqs.endpoint_url is None
    assert config.metrics.port == 9200
    assert config.bindings[0].queue == "prod-articles"


BROKEN = {
    "yaml syntax": (
        "bindings:\n  - name: a\n    queue: [unclosed\n",
        "workers.yaml: invalid YAML: line 4, column 1",
    ),
    "misspelled key": (
        "bindings:\n  - name: a\n    queue: q\n    handler: json:loads\n    procesess: 3\n",
        "workers.yaml:5: bindings[0].procesess: unknown key (did you mean 'processes'?)",
    ),
    "wrong type": (
        "bindings:\n  - name: a\n    queue: q\n    handler: json:loads\n    processes: many\n",
        "workers.yaml:5: bindings[0].processes: Input should be a valid integer",
    ),
    "batch over ten": (
        "bindings:\n  - {name: a, queue: q, handler: 'json:loads', batch_size: 11}\n",
        "bindings[0].batch_size: Input should be less than or equal to 10 (got 11)",
    ),
    "visibility over 12 h": (
        "defaults: {visibility_timeout: 50000}\n"
        "bindings:\n  - {name: a, queue: q, handler: 'handlers.examples:flaky'}\n",
        "workers.yaml:1: defaults.visibility_timeout: Input should be less than or equal to 43200",
    ),
    "missing module": (
        "bindings:\n  - name: a\n    queue: q\n    handler: nosuchmodule:run\n",
        "workers.yaml:4: bindings[0].handler: cannot import module 'nosuchmodule': no such module",
    ),
    "missing function": (
        "bindings:\n  - name: a\n    queue: q\n    handler: handlers.examples:generate_artcle\n",
        "workers.yaml:4: bindings[0].handler: module 'handlers.examples' has no attribute"
        " 'generate_artcle' (did you mean 'generate_article'?)",
    ),
    "module raising on import": (
        "bindings:\n  - name: a\n    queue: q\n    handler: brokenmodule:run\n",
        "bindings[0].handler: importing 'brokenmodule' failed: RuntimeError: database URL missing",
    ),
    "duplicate binding name": (
        "bindings:\n  - {name: a, queue: q1, handler: 'handlers.examples:flaky'}\n"
        "  - {name: a, queue: q2, handler: 'handlers.examples:flaky'}\n",
        "workers.yaml:3: bindings[1].name: duplicate binding name 'a' (also bindings[0].name)",
    ),
    "fifo without fifo dlq": (
        "bindings:\n  - {name: a, queue: q.fifo, handler: 'json:loads',"
        " dead_letter: {queue: q-dlq}}\n",
        "bindings[0]: a FIFO queue needs a FIFO dead-letter queue",
    ),
    "unset variable": (
        "bindings:\n  - {name: a, queue: '${SQS_SUPERVISOR_UNSET}', handler: 'json:loads'}\n",
        "bindings[0].queue: environment variable SQS_SUPERVISOR_UNSET is not set",
    ),
    "handler without a colon": (
        "bindings:\n  - name: a\n    queue: q\n    handler: handlers.examples.flaky\n",
        "workers.yaml:4: bindings[0].handler: expected module:function"
        " (for example handlers.http:post) (got 'handlers.examples.flaky')",
    ),
    "handler that takes no arguments": (
        "bindings:\n  - name: a\n    queue: q\n    handler: os:getcwd\n",
        "workers.yaml:4: bindings[0].handler: os:getcwd cannot be called as"
        " handler(message, ctx): takes 0 positional arguments",
    ),
    "no bindings": (
        "sqs: {region: us-east-1}\n",
        "workers.yaml: bindings: required key is missing",
    ),
}


@pytest.mark.parametrize("verb", ["check", "run"])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_configs_exit_2_naming_the_place(case, verb, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(APPS)
    sys.modules.pop("brokenmodule", None)
    text, expected = BROKEN[case]
    path = write(tmp_path, text)

    assert main([verb, "-c", str(path)]) == 2

    err = capsys.readouterr().err
    assert expected in err
    assert err.startswith(f"error: {path}")
    assert all(line.startswith(f"error: {path}") for line in err.splitlines())
    assert "Traceback" not in err


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_check_prints_the_bindings_and_exits_0(tmp_path, capsys):
    assert main(["check", "-c", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr().out
    assert "articles: articles -> handlers.examples:generate_article x3" in out
    assert "OK, 2 binding(s)" in out


FIVE_MISTAKES = """\
defaults:
  visibility_timeout: 50000
bindings:
  - name: a
    queue: q
    handler: handlers.examples:generate_article
    procesess: 3
  - name: b
    queue: q2
    handler: handlers.examples:make_thumbnail
    batch_size: 11
    wait_time_seconds: 30
  - name: c
    queue: q3
    handler: handlers.examples:make_thumbnal
  - name: c
    queue: q4
    handler: handlers.examples:flaky
"""


@pytest.mark.parametrize("verb", ["check", "run"])
def test_every_mistake_in_every_binding_is_reported_in_one_run(verb, tmp_path, capsys):
    path = write(tmp_path, FIVE_MISTAKES)

    assert main([verb, "-c", str(path)]) == 2

    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}:2: defaults.visibility_timeout:"
        " Input should be less than or equal to 43200 (got 50000)",
        f"error: {path}:7: bindings[0].procesess: unknown key (did you mean 'processes'?)",
        f"error: {path}:11: bindings[1].batch_size:"
        " Input should be less than or equal to 10 (got 11)",
        f"error: {path}:12: bindings[1].wait_time_seconds:"
        " Input should be less than or equal to 20 (got 30)",
        f"error: {path}:16: bindings[3].name: duplicate binding name 'c' (also bindings[2].name)",
        f"error: {path}:15: bindings[2].handler: module 'handlers.examples' has no attribute"
        " 'make_thumbnal' (did you mean 'make_thumbnail'?)",
    ]


def test_a_top_level_mistake_does_not_hide_the_bindings_mistakes(tmp_path, capsys):
    path = write(
        tmp_path,
        """\
        metrics: {port: 99999}
        bindings:
          - just-a-string
          - {name: a, queue: q, handler: "handlers.examples:flaky", procesess: 1}
        """,
    )

    assert main(["check", "-c", str(path)]) == 2

    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}:1: metrics.port: Input should be less than or equal to 65535 (got 99999)",
        f"error: {path}:3: bindings[0]: Input should be a valid dictionary (got 'just-a-string')",
        f"error: {path}:4: bindings[1].procesess: unknown key (did you mean 'processes'?)",
    ]


def test_every_unset_variable_is_reported_at_once(tmp_path, capsys, monkeypatch):
    for name in ("SQS_SUPERVISOR_UNSET_A", "SQS_SUPERVISOR_UNSET_B"):
        monkeypatch.delenv(name, raising=False)
    path = write(
        tmp_path,
        """\
        sqs: {endpoint_url: "${SQS_SUPERVISOR_UNSET_A}"}
        bindings:
          - {name: a, queue: "${SQS_SUPERVISOR_UNSET_B}", handler: "handlers.examples:flaky"}
        """,
    )

    assert main(["check", "-c", str(path)]) == 2

    hint = " is not set (write ${{{0}:-default}} to give a default)"
    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}:1: sqs.endpoint_url: environment variable SQS_SUPERVISOR_UNSET_A"
        + hint.format("SQS_SUPERVISOR_UNSET_A"),
        f"error: {path}:3: bindings[0].queue: environment variable SQS_SUPERVISOR_UNSET_B"
        + hint.format("SQS_SUPERVISOR_UNSET_B"),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "handlers",
        "handlers.examples.flaky",
        "handlers.examples:",
        ":flaky",
        "1x:run",
        "a-b:run",
        "a b:run",
        "a:b:c",
        "a:run\n",
        "a:run()",
    ],
)
def test_a_handler_spec_that_is_not_module_function_is_refused(spec, tmp_path):
    # JSON is YAML, and its quoting keeps the newline a newline.
    path = write(tmp_path, f"bindings:\n  - {{name: a, queue: q, handler: {json.dumps(spec)}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, import_handlers=False)
    assert str(caught.value) == (
        f"{path}:2: bindings[0].handler: expected module:function"
        f" (for example handlers.http:post) (got {spec!r})"
    )


SIGNATURES = """\
import functools


def two(message, ctx): ...
def nothing(): ...
def one(message): ...
def three(message, ctx, extra): ...
def flexible(*args, **kwargs): ...
def defaulted(message, ctx=None, extra=None): ...
def needs_token(message, ctx, *, token): ...
async def coroutine(message, ctx): ...
def _prefixed(prefix, message, ctx): ...


class Handler:
    def __call__(self, message, ctx): ...


class OneArgument:
    def __call__(self, message): ...


instance = Handler()
one_argument = OneArgument()
partial = functools.partial(_prefixed, "p")
"""


@pytest.fixture
def signatures(tmp_path, monkeypatch):
    """A module of handlers with assorted signatures, importable as ``signatures``."""
    (tmp_path / "signatures.py").write_text(SIGNATURES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "signatures", raising=False)


@pytest.mark.parametrize(
    ("spec", "batch", "reason"),
    [
        (
            "os:getcwd",
            False,
            "os:getcwd cannot be called as handler(message, ctx): takes 0 positional arguments",
        ),
        ("signatures:nothing", False, "takes 0 positional arguments"),
        ("signatures:one", False, "takes 1 positional argument"),
        (
            "signatures:one",
            True,
            "signatures:one cannot be called as handler(messages, ctx):"
            " takes 1 positional argument",
        ),
        ("signatures:three", False, "requires 3 positional arguments"),
        ("signatures:needs_token", False, "requires keyword-only argument 'token'"),
        ("signatures:one_argument", False, "takes 1 positional argument"),
        ("signatures:Handler", False, "takes 0 positional arguments"),
    ],
)
def test_check_refuses_a_handler_that_cannot_take_message_and_ctx(
    spec, batch, reason, signatures, tmp_path, capsys
):
    path = write(
        tmp_path,
        f"bindings:\n  - name: a\n    queue: q\n    handler: {spec}\n"
        f"    batch: {str(batch).lower()}\n",
    )

    assert main(["check", "-c", str(path)]) == 2

    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}:4: bindings[0].handler: {spec} cannot be called as")
    assert line.endswith(reason)


def test_check_accepts_every_way_of_taking_message_and_ctx(signatures, tmp_path, capsys):
    # builtins:max has no readable signature: accepted (see config.handlers._call_problem).
    specs = ["two", "flexible", "defaulted", "coroutine", "instance", "partial"]
    entries = [
        f"  - {{name: s{i}, queue: q{i}, handler: 'signatures:{s}'}}" for i, s in enumerate(specs)
    ]
    path = write(
        tmp_path,
        "bindings:\n"
        + "\n".join([*entries, "  - {name: m, queue: m, handler: 'builtins:max'}"])
        + "\n",
    )

    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr().err


def test_check_accepts_every_built_in_and_test_handler(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(APPS)
    examples = importlib.import_module("handlers.examples")
    apps = importlib.import_module("apphandlers")
    bindings = [
        "  - {name: http, queue: http, handler: 'handlers.http:post',"
        " options: {url: 'http://example.com/hook'}}",
        "  - {name: cmd, queue: cmd, handler: 'handlers.command:run', options: {argv: [cat]}}",
    ]
    for module in (examples, apps):
        for name, function in vars(module).items():
            if callable(function) and getattr(function, "__module__", "") == module.__name__:
                if name.startswith("_"):
                    continue
                batch = "true" if name.startswith("batch_") else "false"
                bindings.append(
                    f"  - {{name: {name}, queue: {name}, handler: '{module.__name__}:{name}',"
                    f" batch: {batch}}}"
                )
    path = write(tmp_path, "bindings:\n" + "\n".join(bindings) + "\n")

    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr().err
    assert f"OK, {len(bindings)} binding(s)" in capsys.readouterr().out


def test_the_console_script_imports_handlers_from_the_working_directory(tmp_path):
    """Like gunicorn and celery: a project's own handler modules import without PYTHONPATH."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "myjobs.py").write_text("def run(message, ctx):\n    return None\n")
    (tmp_path / "w.yaml").write_text(
        "bindings:\n  - {name: mine, queue: mine, handler: 'myjobs:run'}\n"
    )
    script = Path(sys.executable).with_name("sqs-supervisor")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(script), "check", "-c", "w.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "mine: mine -> myjobs:run" in result.stdout
