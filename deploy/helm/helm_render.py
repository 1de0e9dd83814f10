"""Render the chart with Helm's own engine (helm-sdkpy), offline.

helm-sdkpy has no `helm template`: its Install needs a cluster. This script gives it
one that exists only in memory: a tiny Kubernetes API on 127.0.0.1 that answers
discovery for the kinds the chart uses, says "not found" to every GET and accepts every
POST. Releases are kept in memory (HELM_DRIVER=memory). The manifests Helm sends are
the rendered chart.

Usage: helm_render.py CHART OUT_FILE [VALUES_FILE ...]
"""

import asyncio
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

# group/version -> [(plural, kind, namespaced)]
RESOURCES = {
    "v1": [("namespaces", "Namespace", False), ("configmaps", "ConfigMap", True),
           ("secrets", "Secret", True), ("services", "Service", True),
           ("serviceaccounts", "ServiceAccount", True), ("pods", "Pod", True),
           ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True),
                ("daemonsets", "DaemonSet", True)],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True), ("networkpolicies", "NetworkPolicy", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    "keda.sh/v1alpha1": [("scaledobjects", "ScaledObject", True),
                         ("triggerauthentications", "TriggerAuthentication", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True),
                                 ("podmonitors", "PodMonitor", True),
                                 ("prometheusrules", "PrometheusRule", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class FakeKube(BaseHTTPRequestHandler):
    created: list = []
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self):
        self._send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"})

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0",
                                    "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = {}
            for gv in RESOURCES:
                if "/" in gv:
                    group, version = gv.split("/")
                    groups.setdefault(group, []).append({"groupVersion": gv, "version": version})
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": v, "preferredVersion": v[0]} for g, v in groups.items()]})
        gv = path[len("/api/"):] if path.startswith("/api/") else path[len("/apis/"):]
        if path.startswith(("/api/", "/apis/")) and gv in RESOURCES:
            return self._send(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                                    "resources": [{"name": plural, "singularName": kind.lower(),
                                                   "namespaced": ns, "kind": kind, "verbs": VERBS}
                                                  for plural, kind, ns in RESOURCES[gv]]})
        return self._not_found()

    def do_POST(self):
        # Bodies may be protobuf (built-in kinds) or JSON; answer with a minimal object
        # of the kind the URL names. Helm's manifest, not these bodies, is the output.
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        parts = self.path.split("?")[0].strip("/").split("/")
        gv = parts[1] if parts[0] == "api" else "/".join(parts[1:3])
        plural = parts[-1] if self.command == "POST" else parts[-2]
        kind = {p: k for p, k, _ in RESOURCES.get(gv, [])}.get(plural, "Unknown")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        with self.lock:
            self.created.append((gv, kind))
        meta = body.get("metadata", {})
        meta.update({"uid": f"uid-{len(self.created)}", "resourceVersion": "1"})
        self._send(201, {"apiVersion": gv, "kind": kind, "metadata": meta})

    def do_PUT(self):
        self.do_POST()

    def do_PATCH(self):
        self.do_POST()

    def do_DELETE(self):
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def deep_merge(base, override):
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: deep_merge(base[k], v) if k in base else v for k, v in override.items()}}
    return override


def render(chart: Path, values: dict, namespace: str = "pixq", release: str = "pixq") -> str:
    os.environ["HELM_DRIVER"] = "memory"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKube)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
    })
    try:
        import helm_sdkpy

        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
        result = asyncio.run(helm_sdkpy.Install(config).run(
            release, str(chart), values=values or None, wait=False, timeout=60))
    finally:
        server.shutdown()
    manifest = result.get("manifest") if isinstance(result, dict) else None
    if not manifest:
        raise SystemExit(f"helm returned no manifest: {str(result)[:500]}")
    return manifest


def main(argv):
    chart, out = Path(argv[1]).resolve(), Path(argv[2])
    values = {}
    for values_file in argv[3:]:
        values = deep_merge(values, yaml.safe_load(Path(values_file).read_text()) or {})
    manifest = render(chart, values)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(manifest)
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    print(f"==> rendered {len(docs)} objects to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
