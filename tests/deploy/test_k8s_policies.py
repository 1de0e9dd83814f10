"""Policy checks on every render: kustomize overlays (dev, prod, prod-hpa) and Helm renders."""

import yaml

import pixq.names
from pixq.settings import Settings
from pixq.units import parse_duration

from deploy_support import K8S, containers, find, one, workloads

REQUIRED_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
]
PIXQ_WORKLOADS = {"pixq-api": ("api", 8080), "pixq-worker": ("worker", None)}


def _label_matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def _pod_labels(objs):
    return [w["spec"]["template"]["metadata"]["labels"] for w in workloads(objs)]


def test_resources_requests_and_limits(rendered):
    for w in workloads(rendered):
        for c in containers(w):
            res = c.get("resources", {})
            for section in ("requests", "limits"):
                for key in ("cpu", "memory"):
                    assert key in res.get(section, {}), (
                        f"{w['metadata']['name']}/{c['name']}: resources.{section}.{key} missing")


def test_api_and_worker_sizes(rendered, overlay):
    api = one(rendered, "Deployment", "pixq-api")["spec"]["template"]["spec"]["containers"][0]
    worker = one(rendered, "Deployment", "pixq-worker")["spec"]["template"]["spec"]["containers"][0]
    if overlay != "dev":
        assert api["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                    "limits": {"cpu": "500m", "memory": "512Mi"}}
        assert worker["resources"] == {"requests": {"cpu": "200m", "memory": "256Mi"},
                                       "limits": {"cpu": "1000m", "memory": "1Gi"}}


def test_probes_on_health_endpoints(rendered):
    config = one(rendered, "ConfigMap", "pixq-config")["data"]
    ports = {"pixq-api": int(config.get("API_PORT", Settings.model_fields["api_port"].default)),
             "pixq-worker": int(config.get("METRICS_PORT", Settings.model_fields["metrics_port"].default))}
    for name, port in ports.items():
        c = one(rendered, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
            http = c.get(probe, {}).get("httpGet")
            assert http, f"{name}: {probe} must be an httpGet probe"
            assert http["path"] == path, f"{name}: {probe} path {http['path']} != {path}"
            probe_port = named.get(http["port"], http["port"])
            assert probe_port == port, f"{name}: {probe} port {probe_port} != {port}"


def test_security_context_everywhere(rendered):
    for w in workloads(rendered):
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True, name
        for c in containers(w):
            sc = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            assert (sc.get("runAsNonRoot", psc.get("runAsNonRoot"))) is True, f"{where}: runAsNonRoot"
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            assert uid is None or uid != 0, f"{where}: runs as uid 0"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert sc.get("privileged") in (None, False), f"{where}: privileged"
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: capabilities.drop ALL"
            assert not sc.get("capabilities", {}).get("add"), f"{where}: adds capabilities"
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccompProfile"
        assert pod.get("automountServiceAccountToken") is False, f"{name}: service account token"


def test_writable_tmp_is_an_emptydir(rendered):
    for name in PIXQ_WORKLOADS:
        pod = one(rendered, "Deployment", name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{name}: /tmp must be mounted (readOnlyRootFilesystem)"
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be an emptyDir"


def test_required_labels(rendered):
    for obj in rendered:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in REQUIRED_LABELS if not labels.get(k)]
        assert not missing, f"{where}: missing labels {missing}"
        assert labels["app.kubernetes.io/part-of"] == "pixq", where
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            tpl = obj["spec"]["template"]["metadata"].get("labels", {})
            missing = [k for k in REQUIRED_LABELS if not tpl.get(k)]
            assert not missing, f"{where} pod template: missing labels {missing}"
            assert _label_matches(obj["spec"]["selector"]["matchLabels"], tpl), where


def test_selectors_match_pods(rendered):
    pods = _pod_labels(rendered)
    for svc in find(rendered, "Service"):
        assert any(_label_matches(svc["spec"]["selector"], p) for p in pods), svc["metadata"]["name"]
    for pdb in find(rendered, "PodDisruptionBudget"):
        assert any(_label_matches(pdb["spec"]["selector"]["matchLabels"], p) for p in pods), \
            pdb["metadata"]["name"]
    for np in find(rendered, "NetworkPolicy"):
        sel = np["spec"]["podSelector"].get("matchLabels", {})
        assert any(_label_matches(sel, p) for p in pods), np["metadata"]["name"]


def test_pdb_for_every_replicated_workload(rendered):
    pods = {w["metadata"]["name"]: w for w in workloads(rendered)}
    pdbs = find(rendered, "PodDisruptionBudget")
    for name, w in pods.items():
        if effective_replicas(rendered, w) > 1 or name in PIXQ_WORKLOADS:
            labels = w["spec"]["template"]["metadata"]["labels"]
            assert any(_label_matches(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs), \
                f"{name} has no PodDisruptionBudget"


def test_topology_spread(rendered):
    for name in ("pixq-api", "pixq-worker", "pixq-nats", "pixq-minio"):
        w = [o for o in workloads(rendered) if o["metadata"]["name"] == name][0]
        tsc = w["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        keys = {t["topologyKey"] for t in tsc}
        assert "kubernetes.io/hostname" in keys, f"{name}: no hostname topology spread"


def test_worker_grace_exceeds_job_timeout_plus_shutdown_grace(rendered):
    config = one(rendered, "ConfigMap", "pixq-config")["data"]
    fields = Settings.model_fields
    job_timeout = parse_duration(config.get("JOB_TIMEOUT", fields["job_timeout"].default))
    shutdown = parse_duration(config.get("WORKER_SHUTDOWN_GRACE", fields["worker_shutdown_grace"].default))
    grace = one(rendered, "Deployment", "pixq-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > job_timeout + shutdown, (
        f"worker terminationGracePeriodSeconds {grace} <= JOB_TIMEOUT {job_timeout} + "
        f"WORKER_SHUTDOWN_GRACE {shutdown}")


def test_secrets_are_placeholders_or_dev_values(rendered, overlay):
    """Templates hold CHANGE_ME (refused by pixq at start); only the dev overlay, which must
    run as it is, holds real (public, dev-only) values."""
    for secret in find(rendered, "Secret"):
        name = secret["metadata"]["name"]
        assert not secret.get("data"), f"{name}: base64 data in a Secret template: use stringData"
        for key, value in secret.get("stringData", {}).items():
            if overlay == "dev":
                assert "CHANGE_ME" not in value, f"dev overlay: Secret {name}.{key} is still a placeholder"
                assert "dev" in value, f"dev overlay: Secret {name}.{key} does not say it is dev-only"
            else:
                assert "CHANGE_ME" in value, f"Secret {name}.{key} is not a placeholder"


def test_images_pinned(rendered):
    for w in workloads(rendered):
        for c in containers(w):
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{w['metadata']['name']}/{c['name']}: image {image} not pinned"


def test_keda_trigger_names_match_code(rendered, overlay):
    scaled = find(rendered, "ScaledObject")
    if overlay == "prod-hpa":
        assert not scaled, "prod-hpa must not keep the ScaledObject (conflicts with the HPA)"
        return
    (so,) = scaled
    assert so["spec"]["scaleTargetRef"]["name"] == "pixq-worker"
    triggers = {t["name"]: t["metadata"] for t in so["spec"]["triggers"] if t["type"] == "nats-jetstream"}
    # One trigger per priority lane's consumer, composed into their SUM (the HPA alone would
    # take the max over triggers): pixq.queue.LANES.
    assert {name: meta["consumer"] for name, meta in triggers.items()} == {
        "interactive_lag": pixq.names.WORKERS_CONSUMER, "batch_lag": pixq.names.BATCH_WORKERS_CONSUMER}
    modifiers = so["spec"]["advanced"]["scalingModifiers"]
    assert modifiers["formula"] == "interactive_lag + batch_lag"
    assert modifiers["metricType"] == "AverageValue" and modifiers["target"] == "20"
    for meta in triggers.values():
        assert meta["stream"] == pixq.names.JOBS_STREAM
        assert meta["account"] == "$G"
        host, _, port = meta["natsServerMonitoringEndpoint"].rpartition(":")
        assert port == "8222"
        svc_name, namespace = host.split(".")[:2]
        assert namespace == "pixq"
        svc = one(rendered, "Service", svc_name)
        assert 8222 in [p["port"] for p in svc["spec"]["ports"]]
    if overlay == "prod":
        assert so["spec"]["minReplicaCount"] == 3 and so["spec"]["maxReplicaCount"] == 10


def test_prod_hpa_uses_adapter_metric():
    from deploy_support import objects
    objs = objects("prod-hpa")
    hpa = one(objs, "HorizontalPodAutoscaler", "pixq-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pixq-worker"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    (metric,) = hpa["spec"]["metrics"]
    name = metric[metric["type"].lower()]["metric"]["name"]
    values = yaml.safe_load((K8S / "components/hpa-prometheus/prometheus-adapter-values.yaml").read_text())
    served = {r["name"]["as"] for r in values["rules"][metric["type"].lower()]}
    assert name in served, f"HPA metric {name} is not served by the adapter rules {served}"
    # KEDA's lag is num_pending + num_ack_pending; the fallback scales on the same quantity.
    assert name == "pixq_queue_backlog_messages"
    assert all("pixq_queue_backlog_messages" in r["seriesQuery"] for r in values["rules"]["external"])
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "20"}, \
        "the HPA target must match KEDA's lagThreshold"


def effective_replicas(objs, workload):
    """spec.replicas, or the autoscaler's minimum when the manifest leaves replicas to it."""
    if "replicas" in workload["spec"]:
        return workload["spec"]["replicas"]
    name = workload["metadata"]["name"]
    for scaler in find(objs, "HorizontalPodAutoscaler"):
        if scaler["spec"]["scaleTargetRef"]["name"] == name:
            return scaler["spec"].get("minReplicas", 1)
    for scaler in find(objs, "ScaledObject"):
        if scaler["spec"]["scaleTargetRef"]["name"] == name:
            return scaler["spec"].get("minReplicaCount", 0)
    return 1


def test_replica_counts(rendered, overlay):
    reps = {w["metadata"]["name"]: effective_replicas(rendered, w) for w in workloads(rendered)}
    if overlay == "dev":
        assert all(r == 1 for r in reps.values()), reps
        return
    assert 2 <= reps["pixq-api"] <= 3
    assert 3 <= reps["pixq-worker"] <= 10
    assert reps["pixq-nats"] == 3 and reps["pixq-minio"] == 4 and reps["pixq-redis"] == 1
    hpa = one(rendered, "HorizontalPodAutoscaler", "pixq-api")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2


def test_stateful_services(rendered, overlay):
    for name in ("pixq-nats", "pixq-minio", "pixq-redis"):
        sts = one(rendered, "StatefulSet", name)
        assert sts["spec"].get("volumeClaimTemplates"), f"{name}: no PVC"
    nats_conf = one(rendered, "ConfigMap", "pixq-nats-config")["data"]["nats.conf"]
    assert "jetstream" in nats_conf and "http: 0.0.0.0:8222" in nats_conf
    if overlay != "dev":
        assert "cluster {" in nats_conf
        for i in range(3):
            assert f"pixq-nats-{i}.pixq-nats-headless:6222" in nats_conf
        minio_cmd = " ".join(one(rendered, "StatefulSet", "pixq-minio")["spec"]["template"]["spec"]["containers"][0]["command"])
        assert "{0...3}" in minio_cmd, "MinIO must run distributed over 4 pods"
    redis_conf = one(rendered, "ConfigMap", "pixq-redis-config")["data"]["redis.conf"]
    assert "appendonly yes" in redis_conf


def _allows(policy, to_labels, port):
    for rule in policy["spec"].get("egress", []):
        ports = [p.get("port") for p in rule.get("ports", [])]
        if port in ports and any(_label_matches(peer.get("podSelector", {}).get("matchLabels"), to_labels)
                                 for peer in rule.get("to", []) if "podSelector" in peer
                                 and "namespaceSelector" not in peer):
            return True
    return False


def test_network_policies(rendered):
    policies = find(rendered, "NetworkPolicy")
    labels = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(rendered)}
    deny = [p for p in policies
            if all(_label_matches(p["spec"]["podSelector"].get("matchLabels"), pod) for pod in labels.values())
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy covering every pod"
    for client in ("pixq-api", "pixq-worker"):
        pol = [p for p in policies if _label_matches(p["spec"]["podSelector"].get("matchLabels"), labels[client])
               and p["spec"]["podSelector"]]
        assert pol, f"no NetworkPolicy for {client}"
        for target, port in (("pixq-nats", 4222), ("pixq-redis", 6379), ("pixq-minio", 9000)):
            assert any(_allows(p, labels[target], port) for p in pol), f"{client} -> {target}:{port} not allowed"


WEBHOOK_EGRESS_EXCEPT = {"0.0.0.0/0": {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                                       "100.64.0.0/10"},
                         "::/0": {"fc00::/7", "fe80::/10"}}


def _policies_for(rendered, name):
    labels = one(rendered, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    return [p for p in find(rendered, "NetworkPolicy") if _label_matches(p["spec"]["podSelector"].get("matchLabels"), labels)]


def _ip_rules(policies):
    return [rule for p in policies for rule in p["spec"].get("egress", [])
            if any("ipBlock" in peer for peer in rule.get("to", []))]


def test_workers_may_deliver_webhooks(rendered):
    """Workers reach webhook receivers on the internet over HTTP(S), and resolve their names;
    private, link-local (cloud metadata) and CGNAT ranges stay closed, each one that pixq's
    SSRF guard (pixq.outbound) refuses anyway. The API gets no such egress."""
    import ipaddress

    from pixq.outbound import blocked_reason
    workers = _policies_for(rendered, "pixq-worker")
    (rule,) = _ip_rules(workers)
    assert sorted((p["protocol"], p["port"]) for p in rule["ports"]) == [("TCP", 80), ("TCP", 443)]
    blocks = {peer["ipBlock"]["cidr"]: set(peer["ipBlock"].get("except", [])) for peer in rule["to"]}
    assert blocks == WEBHOOK_EGRESS_EXCEPT, blocks
    for cidr in set().union(*blocks.values()):
        network = ipaddress.ip_network(cidr)
        for address in (network.network_address, network[1], network.broadcast_address):
            assert blocked_reason(address), f"{cidr}: pixq would connect to {address}, the policy blocks it"
    dns = [rule for p in workers for rule in p["spec"].get("egress", [])
           if {"protocol": "UDP", "port": 53} in rule.get("ports", [])]
    assert dns and all(peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
                       for rule in dns for peer in rule["to"]), "workers must resolve receivers' names"
    assert not _ip_rules(_policies_for(rendered, "pixq-api")), "the API sends no webhooks"


def test_ingress_suits_event_streams(rendered):
    """SSE streams and long-polls pass the Ingress: its read timeout outlasts the API's longest
    silence (the SSE heartbeat, a long-poll's wait) with room to spare, and it does not force
    response buffering on (the API's X-Accel-Buffering: no handles SSE either way)."""
    from api.handlers.jobs import LONG_POLL_MAX_SECONDS
    config = one(rendered, "ConfigMap", "pixq-config")["data"]
    heartbeat = parse_duration(config.get("EVENTS_HEARTBEAT", Settings.model_fields["events_heartbeat"].default))
    annotations = one(rendered, "Ingress", "pixq-api")["metadata"]["annotations"]
    read_timeout = float(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
    assert read_timeout >= 2 * heartbeat, f"proxy-read-timeout {read_timeout}s vs EVENTS_HEARTBEAT {heartbeat}s"
    assert read_timeout >= LONG_POLL_MAX_SECONDS + 30, f"proxy-read-timeout {read_timeout}s vs long-poll"
    assert annotations.get("nginx.ingress.kubernetes.io/proxy-buffering", "off") == "off"


def _admits(policy, from_labels, port):
    """Whether an ingress rule of ``policy`` admits pods with ``from_labels`` on ``port``."""
    for rule in policy["spec"].get("ingress", []):
        ports = [p.get("port") for p in rule.get("ports", [])]
        if port in ports and any(_label_matches(peer.get("podSelector", {}).get("matchLabels"), from_labels)
                                 for peer in rule.get("from", []) if "podSelector" in peer
                                 and "namespaceSelector" not in peer):
            return True
    return False


def test_minio_reaches_nats_for_bucket_events(rendered):
    """MinIO publishes bucket notifications to NATS: its egress to NATS's client port and NATS's
    ingress from it are both open (under default deny, either one alone drops the connection);
    nothing more: not the cluster or monitoring ports."""
    labels = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(rendered)}
    policies = find(rendered, "NetworkPolicy")

    def policies_of(name):
        return [p for p in policies if p["spec"]["podSelector"]
                and _label_matches(p["spec"]["podSelector"].get("matchLabels"), labels[name])]
    minio, nats = policies_of("pixq-minio"), policies_of("pixq-nats")
    assert any(_allows(p, labels["pixq-nats"], 4222) for p in minio), "pixq-minio -> pixq-nats:4222 not allowed"
    assert any(_admits(p, labels["pixq-minio"], 4222) for p in nats), "pixq-nats does not admit pixq-minio on 4222"
    for port in (6222, 8222, 7777):
        assert not any(_allows(p, labels["pixq-nats"], port) for p in minio), f"pixq-minio -> pixq-nats:{port}"
        assert not any(_admits(p, labels["pixq-minio"], port) for p in nats), f"pixq-nats admits pixq-minio:{port}"
