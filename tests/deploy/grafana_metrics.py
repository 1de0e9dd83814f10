"""Metric names used by the Grafana dashboards and the PrometheusRule alerts.

``dashboard_metric_names()`` returns ``{source: {metric names}}`` where source is
``"pixq"`` (our own /metrics: names starting ``pixq_``) or the exporter that serves the
series (``"nats-exporter"``, ``"kube-state-metrics"``, ``"prometheus"``, ``"keda"``).
Histogram series keep their suffix as written in the query (``..._bucket``, ``_sum``,
``_count``), i.e. exactly as they appear in a /metrics exposition, so a live test can
compare ``dashboard_metric_names()["pixq"]`` with the names scraped from the API and
the worker. ``metric_sources()`` gives the inverse mapping ``{name: source}``.

Importable from tests in tests/deploy as ``import grafana_metrics``; from elsewhere load
it by path. Needs only the standard library and PyYAML.
"""

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULE_FILES = [REPO / "deploy" / "k8s" / "base" / "monitoring.yaml"]

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

SOURCE_PREFIXES = [
    ("pixq_", "pixq"),
    ("jetstream_", "nats-exporter"),
    ("gnatsd_", "nats-exporter"),
    ("kube_", "kube-state-metrics"),
    ("keda_", "keda"),
]
EXACT_SOURCES = {"up": "prometheus", "scrape_duration_seconds": "prometheus"}

# PromQL words that look like identifiers but are not metric names.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan", "start", "end",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.I)
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\w)")


def extract_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (functions, labels, keywords excluded)."""
    text = _GRAFANA_VAR.sub(" 1 ", expr)
    text = _STRING.sub('""', text)
    text = _MATCHERS.sub(" ", text)       # label matchers {a="b"} (strings already blanked)
    text = _RANGE.sub(" ", text)          # [5m], [$__rate_interval], subqueries [1h:5m]
    text = _LABEL_LIST.sub(" ", text)     # by (le, type), on (pod) ...
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(1)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):
            continue                      # function or aggregation call
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def source_of(metric: str) -> str:
    if metric in EXACT_SOURCES:
        return EXACT_SOURCES[metric]
    for prefix, source in SOURCE_PREFIXES:
        if metric.startswith(prefix):
            return source
    return "unknown"


def dashboard_exprs() -> dict[str, list[str]]:
    """{dashboard file name: [expr, ...]} for every panel target (rows included)."""
    out = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        exprs = []

        def walk(panels):
            for panel in panels:
                for target in panel.get("targets", []):
                    if target.get("expr"):
                        exprs.append(target["expr"])
                walk(panel.get("panels", []))

        walk(dash.get("panels", []))
        out[path.name] = exprs
    return out


def alert_exprs(rule_files=None) -> list[str]:
    exprs = []
    for path in rule_files or RULE_FILES:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "PrometheusRule":
                for group in doc["spec"]["groups"]:
                    exprs += [str(rule["expr"]) for rule in group["rules"]]
    return exprs


def metric_sources() -> dict[str, str]:
    """{metric name: source} over every dashboard and alert expression."""
    names = set()
    for exprs in dashboard_exprs().values():
        for expr in exprs:
            names |= extract_metric_names(expr)
    for expr in alert_exprs():
        names |= extract_metric_names(expr)
    return {name: source_of(name) for name in sorted(names)}


def dashboard_metric_names() -> dict[str, set[str]]:
    """{source: {metric names}}, e.g. {"pixq": {"pixq_api_requests_total", ...}, ...}."""
    out: dict[str, set[str]] = {}
    for name, source in metric_sources().items():
        out.setdefault(source, set()).add(name)
    return out


def base_name(metric: str) -> str:
    """pixq_worker_job_duration_seconds_bucket -> pixq_worker_job_duration_seconds."""
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


if __name__ == "__main__":
    for source, names in sorted(dashboard_metric_names().items()):
        print(source)
        for name in sorted(names):
            print("   ", name)
