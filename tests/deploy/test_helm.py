"""The Helm chart lints clean with the real helm (`helm lint --strict`), renders with
`helm template`, and its values are sane. The renders themselves go through every policy
test (conftest's ``rendered``) and the schema validation below."""

import json

import jsonschema
import pytest
import yaml

from pixq.settings import Settings
from pixq.units import parse_duration

from deploy_support import CHART, HELM_RENDERS, find, helm_args, helm_template, objects, one, run_helm
from k8s_validation import validation_errors


def merged_values(*files):
    def merge(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return {**a, **{k: merge(a.get(k), v) if k in a else v for k, v in b.items()}}
        return b
    values = {}
    for f in files:
        values = merge(values, yaml.safe_load(f.read_text()) or {})
    return values


VALUE_SETS = {name: [CHART / "values.yaml", *files] for name, files in HELM_RENDERS.items()}


@pytest.mark.parametrize("name", sorted(HELM_RENDERS))
def test_helm_lint_strict(name):
    """helm lint --strict: any warning (or a values.schema.json violation) fails."""
    proc = run_helm("lint", "--strict", str(CHART), "--namespace", "pixq",
                    *helm_args(HELM_RENDERS[name]))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"helm lint --strict ({name}) failed:\n{output}"
    assert "1 chart(s) linted, 0 chart(s) failed" in output, output
    assert "[WARNING]" not in output and "[ERROR]" not in output, output


def test_helm_lint_catches_bad_values():
    """The lint above can fail: values.schema.json refuses a 2-node NATS and a credential in a URL."""
    for bad in ("nats.replicas=2", "nats.enabled=false,nats.externalUrl=nats://u:p@nats:4222"):
        proc = run_helm("lint", "--strict", str(CHART), "--set", bad)
        assert proc.returncode != 0, f"helm lint accepted --set {bad}"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_values_match_schema(name):
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(merged_values(*VALUE_SETS[name]), schema)


def test_schema_rejects_bad_values():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = merged_values(CHART / "values.yaml")
    for path, bad in ((("worker", "autoscaling", "mode"), "sometimes"),
                      (("nats", "replicas"), 2),
                      (("config", "NATS_URL"), "nats://elsewhere:4222"),
                      (("config", "TENANTS_FILE"), "/tmp/tenants.yaml"),
                      (("secrets", "natsAuth", "API_PASSWORD"), "1234567890"),
                      (("secrets", "redisAuth", "PASSWORD"), "has space"),
                      (("redis", "externalUrl"), "redis://:pw@redis:6379/0"),
                      (("config", "WEBHOOK_SECRETS"), "whsec_aGVsbG8="),
                      (("config", "PUBLIC_URL"), "pixq.example.com"),
                      (("secrets", "values", "WEBHOOK_SECRETS"), "not-a-whsec-secret"),
                      (("worker", "webhookEgress", "extraCidrs"), ["10.20.0.0"]),
                      (("worker", "webhookEgress", "ports"), [0]),
                      (("config", "PRESETS_FILE"), "/tmp/presets.yaml"),
                      (("secrets", "natsAuth", "MINIO_PASSWORD"), "has space"),
                      (("minio", "bucketEvents", "queueDir"), "relative/dir"),
                      (("presets", "document", "ingest"), [{"prefix": "in/"}])):
        broken = json.loads(json.dumps(values))
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
    tls = json.loads(json.dumps(values))
    tls["nats"]["tls"]["enabled"] = True  # without an issuer
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tls, schema)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_worker_grace_in_chart(name):
    values = merged_values(*VALUE_SETS[name])
    fields = Settings.model_fields
    config = values["config"]
    need = parse_duration(config.get("JOB_TIMEOUT", fields["job_timeout"].default)) + \
        parse_duration(config.get("WORKER_SHUTDOWN_GRACE", fields["worker_shutdown_grace"].default))
    assert values["worker"]["terminationGracePeriodSeconds"] > need


def test_prod_values_are_production_like():
    values = merged_values(*VALUE_SETS["helm-prod"])
    assert values["worker"]["autoscaling"]["mode"] == "keda"
    assert values["worker"]["autoscaling"]["minReplicas"] >= 3
    assert values["nats"]["replicas"] == 3 and values["minio"]["replicas"] == 4
    assert values["api"]["ingress"]["tls"], "prod ingress must use TLS"
    assert values["image"]["tag"] not in ("", "latest")
    secrets = values["secrets"]
    assert secrets["create"] is False, "prod values must not carry secrets: use existing Secrets"
    for key in ("existingSecret", "existingNatsAuthSecret", "existingRedisAuthSecret", "existingTenantsSecret"):
        assert secrets[key], f"prod values: secrets.{key} must name the Secret created beforehand"


def test_chart_templates_hardcode_the_right_jetstream_names():
    import pixq.names
    text = (CHART / "templates" / "worker.yaml").read_text()
    assert f'stream: "{pixq.names.JOBS_STREAM}"' in text
    (scaled,) = find(objects("helm-default"), "ScaledObject")
    # Both priority lanes' consumers, summed (pixq.queue.LANES; the HPA alone takes the max).
    assert {t["name"]: t["metadata"]["consumer"] for t in scaled["spec"]["triggers"]} == {
        "interactive_lag": pixq.names.WORKERS_CONSUMER, "batch_lag": pixq.names.BATCH_WORKERS_CONSUMER}
    assert scaled["spec"]["advanced"]["scalingModifiers"]["formula"] == "interactive_lag + batch_lag"


@pytest.mark.parametrize("name", sorted(HELM_RENDERS))
def test_helm_render_validates(name):
    """Helm's output validates like the kustomize overlays, custom resources included."""
    errors = validation_errors(objects(name))
    assert not errors, "\n".join(errors)


def test_helm_render_matches_kustomize_kinds():
    """Chart and kustomize install the same system (same kinds and names, prod flavour)."""
    def inventory(objs):
        return {(o["kind"], o["metadata"]["name"]) for o in objs
                if o["kind"] not in {"Namespace", "NetworkPolicy", "Secret"}}
    helm = inventory(objects("helm-default"))
    kust = inventory(objects("prod"))
    assert helm == kust, f"only in helm: {sorted(helm - kust)}; only in kustomize: {sorted(kust - helm)}"


def test_helm_secrets_match_kustomize():
    """Same Secrets, same keys, whether installed with the chart or with kustomize."""
    def keys(objs):
        return {o["metadata"]["name"]: sorted(o["stringData"]) for o in find(objs, "Secret")}
    assert keys(objects("helm-default")) == keys(objects("prod"))
    assert not find(objects("helm-prod"), "Secret"), "helm-prod uses existing Secrets only"


def test_hpa_mode_scales_on_the_backlog_metric():
    """worker.autoscaling.mode=hpa: an HPA on pixq_queue_backlog_messages, no ScaledObject."""
    objs = helm_template((), ("worker.autoscaling.mode=hpa",))
    assert not find(objs, "ScaledObject")
    hpa = one(objs, "HorizontalPodAutoscaler", "pixq-worker")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "pixq_queue_backlog_messages"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "20"}


def test_tls_needs_an_issuer():
    proc = run_helm("template", "pixq", str(CHART), "--set", "nats.tls.enabled=true")
    assert proc.returncode != 0 and "issuerRef" in proc.stderr, proc.stderr


def test_external_services_take_credentials_from_secrets():
    """External NATS and Redis: credentials from mounted Secrets, never inline."""
    objs = helm_template((), ("nats.enabled=false", "nats.externalUrl=nats://nats.example:4222",
                              "nats.externalMonitoringEndpoint=nats.example:8222",
                              "nats.externalCredsSecret=pixq-nats-creds",
                              "redis.enabled=false", "redis.externalUrlSecret=pixq-redis-url"))
    for name in ("pixq-api", "pixq-worker"):
        c = one(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["NATS_URL"] == "nats://nats.example:4222"
        assert env["NATS_CREDS_FILE"] == f"/etc/pixq/nats/{name.removeprefix('pixq-')}.creds"
        assert env["REDIS_URL_FILE"] == "/etc/pixq/redis/REDIS_URL" and "REDIS_URL" not in env
    assert not find(objs, "StatefulSet", "pixq-nats") and not find(objs, "StatefulSet", "pixq-redis")
    assert not find(objs, "Secret", "pixq-nats-auth") and not find(objs, "Secret", "pixq-redis-auth")
    errors = validation_errors(list(objs))
    assert not errors, "\n".join(errors)


def _worker_ip_egress(objs):
    policy = one(objs, "NetworkPolicy", "pixq-worker")
    return [rule for rule in policy["spec"]["egress"] if any("ipBlock" in peer for peer in rule["to"])]


def test_webhook_egress_values():
    """worker.webhookEgress: on by default (tests/deploy/test_k8s_policies checks its ranges,
    the same as kustomize's), off on request, extra on-premise CIDRs and ports added."""
    assert len(_worker_ip_egress(objects("helm-default"))) == 1
    assert _worker_ip_egress(helm_template((), ("worker.webhookEgress.enabled=false",))) == []
    objs = helm_template((), ("worker.webhookEgress.extraCidrs={10.20.0.0/16,fd12:3456::/48}",
                              "worker.webhookEgress.ports={443,8443}"))
    (rule,) = _worker_ip_egress(objs)
    assert [peer["ipBlock"]["cidr"] for peer in rule["to"]] == ["0.0.0.0/0", "::/0", "10.20.0.0/16", "fd12:3456::/48"]
    assert [p["port"] for p in rule["ports"]] == [443, 8443]
    assert not validation_errors(list(objs))


def test_webhook_egress_matches_kustomize():
    assert _worker_ip_egress(objects("helm-default")) == _worker_ip_egress(objects("prod"))


def test_empty_webhook_secrets_leave_the_key_out():
    """secrets.values.WEBHOOK_SECRETS: "" renders no key (pixq refuses an empty secret); the
    pods' optional secretKeyRef then leaves WEBHOOK_SECRETS unset."""
    objs = helm_template((), ("secrets.values.WEBHOOK_SECRETS=",))
    assert "WEBHOOK_SECRETS" not in one(objs, "Secret", "pixq-secrets")["stringData"]
    assert "URL_SIGNING_KEY" in one(objs, "Secret", "pixq-secrets")["stringData"]
    for name in ("pixq-api", "pixq-worker"):
        env = {e["name"]: e for e in one(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["WEBHOOK_SECRETS"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_public_url_derivation():
    """config.PUBLIC_URL wins; empty, it is the Ingress's URL; without an Ingress, unset
    (pixq then falls back to API_HOST:API_PORT, which only suits a port-forward)."""
    def public_url(*sets):
        return one(helm_template((), sets), "ConfigMap", "pixq-config")["data"].get("PUBLIC_URL")
    assert public_url() == "http://pixq.example.com"
    assert public_url("api.ingress.tls[0].secretName=pixq-tls") == "https://pixq.example.com"
    assert public_url("config.PUBLIC_URL=https://images.example.org") == "https://images.example.org"
    assert public_url("api.ingress.enabled=false") is None
    assert one(objects("helm-prod"), "ConfigMap", "pixq-config")["data"]["PUBLIC_URL"] == "https://pixq.example.com"


def _minio_notify_env(objs) -> list[dict]:
    minio = one(objs, "StatefulSet", "pixq-minio")["spec"]["template"]["spec"]["containers"][0]
    return [e for e in minio["env"] if e["name"].startswith("MINIO_NOTIFY_")]


def _minio_nats_egress(objs) -> list[dict]:
    return [rule for rule in one(objs, "NetworkPolicy", "pixq-minio")["spec"]["egress"]
            if any(p["port"] == 4222 for p in rule["ports"])]


@pytest.mark.parametrize("helm, kustomize", [("helm-default", "prod"), ("helm-tls", "prod-tls")])
def test_bucket_events_match_kustomize(helm, kustomize):
    """MinIO's notification target, its TLS and its way to NATS: the same with either installer."""
    h, k = objects(helm), objects(kustomize)

    def by_name(objs):
        return {e["name"]: e for e in _minio_notify_env(objs)}

    def ports(objs):
        return [rule["ports"] for rule in _minio_nats_egress(objs)]
    assert by_name(h) == by_name(k) and by_name(h)
    assert ports(h) == ports(k) == [[{"protocol": "TCP", "port": 4222}]]


def test_bucket_events_can_be_turned_off():
    """minio.bucketEvents.enabled=false (or an external NATS, which the chart cannot give MinIO
    credentials for): no notification target, no MinIO -> NATS flow; pixq-minio stays in
    auth.conf (one file for every render), unused."""
    for sets in (("minio.bucketEvents.enabled=false",),
                 ("nats.enabled=false", "nats.externalUrl=nats://nats.example:4222",
                  "nats.externalMonitoringEndpoint=nats.example:8222")):
        objs = helm_template((), sets)
        assert _minio_notify_env(objs) == [], sets
        assert _minio_nats_egress(objs) == [], sets
        for policy in find(objs, "NetworkPolicy", "pixq-nats"):
            peers = [peer for rule in policy["spec"]["ingress"] for peer in rule.get("from", [])]
            assert all(peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") != "minio"
                       for peer in peers), sets
        assert not validation_errors(list(objs))


def test_presets_match_kustomize():
    """The same (empty) PRESETS_FILE, mounted at the same path, with either installer."""
    def presets(objs):
        cm = one(objs, "ConfigMap", "pixq-presets")["data"]
        return yaml.safe_load(cm["presets.yaml"])
    assert presets(objects("helm-default")) == presets(objects("prod")) == {"presets": [], "ingest": []}


def test_presets_values(tmp_path):
    """presets.document renders into the ConfigMap as a file pixq loads (a preset and an
    ingest rule); presets.existingConfigMap renders none and mounts that one instead."""
    from pixq.presets import parse_presets_file
    values = tmp_path / "presets.yaml"
    values.write_text(yaml.safe_dump({"presets": {"document": {
        "presets": [{"name": "catalogue", "version": 1, "tenants": ["catalogue"],
                     "variants": [{"name": "thumb", "width": 320}]}],
        "ingest": [{"prefix": "incoming/catalogue/", "preset": "catalogue", "tenant": "catalogue"}]}}}))
    objs = helm_template((str(values),))
    catalogue = parse_presets_file(one(objs, "ConfigMap", "pixq-presets")["data"]["presets.yaml"])
    assert [p.name for p in catalogue.presets] == ["catalogue"]
    assert catalogue.rule_for("incoming/catalogue/a.jpg").tenant == "catalogue"

    objs = helm_template((), ("presets.existingConfigMap=my-presets",))
    assert not find(objs, "ConfigMap", "pixq-presets")
    for name in ("pixq-api", "pixq-worker"):
        pod = one(objs, "Deployment", name)["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "presets"]
        assert volume["configMap"]["name"] == "my-presets"
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["PRESETS_FILE"] == "/etc/pixq/presets/presets.yaml"
    assert not validation_errors(list(objs))


def test_minio_events_job(tmp_path):
    """minio.bucketEvents.prefixes (or else presets.document's ingest prefixes) renders a
    post-install/upgrade Job that runs the MinIO image's mc: it subscribes each prefix to the
    target PIXQ for puts, idempotently, as the rendered script shows when run against a stand-in
    mc that records its calls. It passes every policy the other workloads do, and may reach
    only MinIO's S3 port. No prefixes (the default): no Job."""
    import subprocess

    from deploy_support import WORKLOAD_KINDS
    assert not find(objects("helm-default"), "Job")
    values = tmp_path / "presets.yaml"
    values.write_text(yaml.safe_dump({"presets": {"document": {
        "presets": [{"name": "catalogue", "version": 1, "variants": [{"name": "thumb", "width": 320}]}],
        "ingest": [{"prefix": "incoming/catalogue/", "preset": "catalogue", "tenant": "catalogue"}]}}}))
    derived = one(helm_template((str(values),)), "Job", "pixq-minio-events")
    assert derived["spec"]["template"]["spec"]["containers"][0]["command"][4:] == ["incoming/catalogue/"]

    objs = list(helm_template((), ("minio.bucketEvents.prefixes={incoming/a/,incoming/b c/}",)))
    job = one(objs, "Job", "pixq-minio-events")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert "Job" in WORKLOAD_KINDS and not validation_errors(objs)
    import test_k8s_policies as policies
    for check in (policies.test_security_context_everywhere, policies.test_resources_requests_and_limits,
                  policies.test_required_labels, policies.test_images_pinned, policies.test_selectors_match_pods,
                  policies.test_network_policies):
        check(objs)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == one(objs, "StatefulSet", "pixq-minio")["spec"]["template"]["spec"]["containers"][0]["image"]

    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "mc").write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s|" "$a"; done >> {calls}\necho >> {calls}\n')
    (bin_dir / "mc").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "BUCKET_NAME": "pixq", "MINIO_ROOT_USER": "u",
           "MINIO_ROOT_PASSWORD": "p", "HOME": str(tmp_path)}
    proc = subprocess.run(c["command"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    recorded = [line.rstrip("|").split("|") for line in calls.read_text().splitlines()]
    assert recorded[0][:2] == ["alias", "set"] and recorded[0][2:5] == ["pixq", "http://pixq-minio:9000", "u"]
    adds = [call for call in recorded if call[:2] == ["event", "add"]]
    assert adds == [["event", "add", "pixq/pixq", "arn:minio:sqs::PIXQ:nats", "--event", "put", "--prefix", prefix,
                     "--ignore-existing"] for prefix in ("incoming/a/", "incoming/b c/")]
    pod_env_names = {e["name"]: e.get("value") for e in c["env"]}
    assert pod_env_names["MC_CONFIG_DIR"].startswith("/tmp/") and pod_env_names["HOME"] == "/tmp"

    # Network: the Job reaches MinIO's 9000 and MinIO admits it; nothing else.
    labels = job["spec"]["template"]["metadata"]["labels"]
    own = [p for p in find(objs, "NetworkPolicy") if p["spec"]["podSelector"].get("matchLabels")
           and all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())]
    egress = [(rule["ports"], peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
              for p in own for rule in p["spec"].get("egress", []) for peer in rule.get("to", [])
              if "podSelector" in peer and "namespaceSelector" not in peer]  # DNS aside
    assert egress == [([{"protocol": "TCP", "port": 9000}], "minio")], egress
    minio_in = [peer["podSelector"]["matchLabels"] for rule in one(objs, "NetworkPolicy", "pixq-minio")["spec"]["ingress"]
                for peer in rule["from"]]
    assert any(m.get("app.kubernetes.io/name") == "minio-events" for m in minio_in)
