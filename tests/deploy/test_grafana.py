"""Grafana dashboards and provisioning files."""

import json

import pytest
import yaml

from deploy_support import DEPLOY
from grafana_metrics import (DASHBOARDS, base_name, dashboard_exprs, dashboard_metric_names,
                             extract_metric_names)

# Every metric pixq exports (tests/deploy keeps this in step with the brief in docs/deploy.md).
PIXQ_METRICS = {
    "pixq_api_requests_total": "counter",
    "pixq_api_request_duration_seconds": "histogram",
    "pixq_jobs_submitted_total": "counter",
    "pixq_api_unpublished_jobs_published_total": "counter",
    "pixq_worker_jobs_total": "counter",
    "pixq_worker_job_duration_seconds": "histogram",
    "pixq_worker_jobs_in_flight": "gauge",
    "pixq_queue_pending_messages": "gauge",
    # num_pending + num_ack_pending of pixq-workers + pixq-workers-batch: the sum KEDA scales
    # on (scalingModifiers), the HPA fallback's metric.
    "pixq_queue_backlog_messages": "gauge",
    "pixq_queue_lane_backlog_messages": "gauge",
    "pixq_dlq_messages": "gauge",
    "pixq_sse_connections": "gauge",
    "pixq_webhook_deliveries_total": "counter",
    "pixq_webhook_attempt_duration_seconds": "histogram",
}
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))


def test_there_are_dashboards():
    assert DASHBOARD_FILES, f"no dashboards in {DASHBOARDS}"


def _panels(dash):
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_importable(path):
    dash = json.loads(path.read_text())
    assert dash["schemaVersion"] >= 38
    assert dash.get("uid") and dash.get("title")
    assert "id" not in dash or dash["id"] is None, "exported dashboards must not pin an id"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("DS_PROMETHEUS")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus"
    ids = set()
    for panel in _panels(dash):
        assert panel["id"] not in ids, f"duplicate panel id {panel['id']}"
        ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no targets"
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target.get("expr"), f"panel {panel['title']!r}: empty expr"
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_dashboards_cover_required_views():
    exprs = " ".join(e for es in dashboard_exprs().values() for e in es)
    required = {
        "submit rate": "pixq_jobs_submitted_total",
        "complete/fail/retry rates": 'outcome="completed"',
        "failures": "failed|dead_lettered",
        "retries": 'outcome="retried"',
        "queue depth": "pixq_queue_pending_messages",
        "consumer lag": "jetstream_consumer_num_ack_pending",
        "processing latency": "histogram_quantile(0.99, sum by (le) (rate(pixq_worker_job_duration_seconds_bucket",
        "DLQ size": "pixq_dlq_messages",
        "worker replicas": "kube_deployment_status_replicas_available",
        "API latency": "pixq_api_request_duration_seconds_bucket",
        "API errors": 'status=~"5.."',
        "open SSE streams": "pixq_sse_connections",
        "webhook outcomes": "pixq_webhook_deliveries_total",
    }
    missing = [view for view, needle in required.items() if needle not in exprs]
    assert not missing, f"dashboards lack: {missing}"


def test_pixq_metric_names_exist():
    used = dashboard_metric_names()
    assert "unknown" not in used, f"metrics of unknown origin: {used.get('unknown')}"
    for name in used["pixq"]:
        base = base_name(name)
        assert base in PIXQ_METRICS or name in PIXQ_METRICS, f"{name}: not a pixq metric"
        if base != name:
            assert PIXQ_METRICS.get(base) == "histogram", f"{name}: {base} is not a histogram"


@pytest.mark.parametrize("expr, expected", [
    ('sum by (type) (rate(pixq_jobs_submitted_total{namespace=~"$namespace"}[$__rate_interval]))',
     {"pixq_jobs_submitted_total"}),
    ("histogram_quantile(0.95, sum by (le, type) (rate(pixq_worker_job_duration_seconds_bucket[5m])))",
     {"pixq_worker_job_duration_seconds_bucket"}),
    ('sum(rate(a_total{status=~"5.."}[5m])) / clamp_min(sum(rate(a_total[5m])), 1e-9) > 0.05',
     {"a_total"}),
    ("max(pixq_dlq_messages) - max(pixq_dlq_messages offset 15m) > 0", {"pixq_dlq_messages"}),
    ('(sum(kube_deployment_status_replicas_available{deployment="x"}) or vector(0)) == 0',
     {"kube_deployment_status_replicas_available"}),
    ("absent(up{job=\"by\"} == 1) and on (pod) foo:bar_rate5m", {"up", "foo:bar_rate5m"}),
    ('rate(x_total[1h:5m]) * ignoring (instance) group_left (le) y', {"x_total", "y"}),
])
def test_extract_metric_names(expr, expected):
    assert extract_metric_names(expr) == expected


def test_provisioning_files():
    prov = DEPLOY / "grafana" / "provisioning"
    dashboards = yaml.safe_load((prov / "dashboards" / "pixq.yaml").read_text())
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    datasources = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]


def test_hpa_fallback_metrics_are_pixq_metrics():
    """The HPA fallback (kustomize component, chart default) scales on a metric pixq exports."""
    component = DEPLOY / "k8s" / "components" / "hpa-prometheus"
    hpa = yaml.safe_load((component / "hpa.yaml").read_text())
    names = {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    adapter = yaml.safe_load((component / "prometheus-adapter-values.yaml").read_text())
    names |= {rule["name"]["as"] for rule in adapter["rules"]["external"]}
    chart = yaml.safe_load((DEPLOY / "helm" / "pixq" / "values.yaml").read_text())
    names.add(chart["worker"]["autoscaling"]["hpaMetricName"])
    assert names == {"pixq_queue_backlog_messages"}, names
    assert PIXQ_METRICS["pixq_queue_backlog_messages"] == "gauge"
