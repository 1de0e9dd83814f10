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
                      (("worker", "webhookEgress", "ports"), [0])):
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
    assert f'consumer: "{pixq.names.WORKERS_CONSUMER}"' in text


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
