"""Config validation: every user mistake is one clear error naming file, line and key path."""

from __future__ import annotations

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
              - {name: a, queue: "${QUEUE_PREFIX}-articles", handler: "json:loads"}
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
        "bindings:\n  - {name: a, queue: q, handler: 'json:loads'}\n",
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
        "bindings:\n  - {name: a, queue: q1, handler: 'json:loads'}\n"
        "  - {name: a, queue: q2, handler: 'json:loads'}\n",
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
    assert "Traceback" not in err


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_check_prints_the_bindings_and_exits_0(tmp_path, capsys):
    assert main(["check", "-c", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr().out
    assert "articles: articles -> handlers.examples:generate_article x3" in out
    assert "OK, 2 binding(s)" in out
