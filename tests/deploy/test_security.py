"""Credentials policy on every render (kustomize overlays and Helm renders): NATS and Redis
require authentication with passwords from Secrets, each pixq component has its own NATS
user with only the subjects it needs, secrets are files or secretKeyRefs (never in a
ConfigMap), and API keys come from TENANTS_FILE mounted from a Secret."""

import re

import pytest
import yaml

import pixq.names as names

from deploy_support import CHART, RENDERS, container, containers, find, objects, one, workloads
from k8s_validation import validate_object
from nats_conf import allowed, may_publish, users

PIXQ = ("pixq-api", "pixq-worker")
PASSWORD_CHARS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _env(c) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def _secret_ref(item: dict) -> tuple[str, str]:
    ref = item["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def _nats_files(objs) -> dict[str, str]:
    return one(objs, "ConfigMap", "pixq-nats-config")["data"]


def test_nats_requires_auth(rendered):
    conf = _nats_files(rendered)
    assert 'include "auth.conf"' in conf["nats.conf"], "nats.conf must include auth.conf"
    auth = conf["auth.conf"]
    assert "authorization {" in auth and "no_auth_user" not in auth
    found = users(auth)
    assert set(found) == {"pixq-api", "pixq-worker", "pixq-minio"}, found
    env = _env(container(rendered, "StatefulSet", "pixq-nats", "nats"))
    secrets = set()
    for user, spec in found.items():
        password = spec["password"]
        assert password and password.startswith("$"), f"{user}: password must come from the environment"
        item = env.get(password[1:])
        assert item and "secretKeyRef" in item.get("valueFrom", {}), f"{user}: {password} not from a Secret"
        secrets.add(_secret_ref(item)[0])
    assert len(secrets) == 1, f"NATS passwords from several Secrets: {secrets}"


def test_auth_conf_is_the_same_everywhere():
    """One permission set: the chart's files/nats-auth.conf is what every render ships."""
    canonical = (CHART / "files" / "nats-auth.conf").read_text()
    for render in RENDERS:
        assert _nats_files(objects(render))["auth.conf"].strip() == canonical.strip(), \
            f"{render}: auth.conf differs from deploy/helm/pixq/files/nats-auth.conf"


def test_nats_users_get_only_their_subjects(rendered):
    found = users(_nats_files(rendered)["auth.conf"])
    api, worker = found["pixq-api"], found["pixq-worker"]
    job_id = "0b7e2c3a-1d2e-4f50-8a9b-0c1d2e3f4a5b"
    for spec in (api, worker):
        assert spec["subscribe"] == ["_INBOX.>"], "replies, acks and pulled messages arrive on inboxes only"
        assert ">" not in spec["publish"] and "$JS.API.>" not in spec["publish"]
        for stream in (names.JOBS_STREAM, names.DLQ_STREAM, names.ADVISORY_STREAM, names.STATUS_STREAM,
                       names.EVENTS_STREAM):
            assert may_publish(spec, f"$JS.API.STREAM.CREATE.{stream}")
            assert not may_publish(spec, f"$JS.API.STREAM.DELETE.{stream}")
        assert not may_publish(spec, "$JS.API.STREAM.CREATE.OTHER_APP")
    # The API submits jobs (and publishes their queued events, pixq.lifecycle), administers the
    # DLQ and reads events; it never writes the workers' subjects.
    assert may_publish(api, names.job_subject("resize"))
    assert may_publish(api, names.job_event_subject("acme", job_id))
    assert may_publish(api, f"$JS.API.STREAM.PURGE.{names.DLQ_STREAM}")
    for subject in (f"pixq.dlq.{job_id}", f"pixq.status.{job_id}",
                    f"$JS.ACK.{names.JOBS_STREAM}.{names.WORKERS_CONSUMER}.1.1.1.1.0",
                    f"$JS.API.CONSUMER.DURABLE.CREATE.{names.JOBS_STREAM}.{names.WORKERS_CONSUMER}"):
        assert not may_publish(api, subject), f"pixq-api may publish {subject}"
    # Its own ephemeral consumers on the events stream work; the workers' durable webhook
    # consumer there, which those wildcards would match, is denied to it.
    events, hooks = names.EVENTS_STREAM, names.WEBHOOKS_CONSUMER
    for subject in (f"$JS.API.CONSUMER.CREATE.{events}", f"$JS.API.CONSUMER.CREATE.{events}.eph1.pixq.events.acme.>",
                    f"$JS.API.CONSUMER.MSG.NEXT.{events}.eph1", f"$JS.API.CONSUMER.DELETE.{events}.eph1"):
        assert may_publish(api, subject), f"pixq-api may not publish {subject}"
    wildcard_matched = (f"$JS.API.CONSUMER.CREATE.{events}.{hooks}", f"$JS.API.CONSUMER.CREATE.{events}.{hooks}.pixq.events.>",
                        f"$JS.API.CONSUMER.MSG.NEXT.{events}.{hooks}", f"$JS.API.CONSUMER.DELETE.{events}.{hooks}")
    for subject in wildcard_matched:
        assert allowed(api["publish"], subject), f"{subject}: the allow list no longer matches it (is the deny still needed?)"
    for subject in (*wildcard_matched, f"$JS.API.CONSUMER.DURABLE.CREATE.{events}.{hooks}",
                    f"$JS.ACK.{events}.{hooks}.1.2.3.4.0"):
        assert not may_publish(api, subject), f"pixq-api may publish {subject}"
    # Workers consume jobs and events (webhooks) and write DLQ, status and events; they never
    # submit or purge.
    for subject in (f"pixq.dlq.{job_id}", f"pixq.status.{job_id}", names.job_event_subject("acme", job_id),
                    f"$JS.ACK.{names.JOBS_STREAM}.{names.WORKERS_CONSUMER}.1.1.1.1.0",
                    f"$JS.API.CONSUMER.MSG.NEXT.{names.JOBS_STREAM}.{names.WORKERS_CONSUMER}",
                    f"$JS.API.CONSUMER.DURABLE.CREATE.{events}.{hooks}", f"$JS.API.CONSUMER.MSG.NEXT.{events}.{hooks}",
                    f"$JS.ACK.{events}.{hooks}.1.2.3.4.0"):
        assert may_publish(worker, subject), f"pixq-worker may not publish {subject}"
    for subject in (names.job_subject("resize"), f"$JS.API.STREAM.PURGE.{names.DLQ_STREAM}",
                    f"$JS.API.CONSUMER.DELETE.{events}.{hooks}"):
        assert not may_publish(worker, subject), f"pixq-worker may publish {subject}"


def test_auth_parser_reads_deny_lists():
    """The checks above can fail: a deny list is read as such, and wins over the allow list."""
    spec = users("""authorization { users = [ { user: a, password: $P, permissions {
        publish { allow: ["x.>"]  # comment "y"
                  deny: ["x.secret"] }
        subscribe { allow: ["_INBOX.>"] } } } ] }""")["a"]
    assert spec["publish"] == ["x.>"] and spec["publish_deny"] == ["x.secret"] and spec["subscribe"] == ["_INBOX.>"]
    assert may_publish(spec, "x.open") and not may_publish(spec, "x.secret") and not may_publish(spec, "y")


def test_minio_nats_user_may_only_publish_bucket_events(rendered):
    """pixq-minio (MinIO's notification target) publishes bucket events under pixq.ingest.>,
    and gets JetStream's publish acks on its inboxes; nothing else: no job, event, DLQ or
    status subject, and no JetStream API (it cannot read, consume, purge or create streams).
    (test_nats_auth.py runs the same on a real nats-server.)"""
    minio = users(_nats_files(rendered)["auth.conf"])["pixq-minio"]
    assert minio["publish"] == [f"{names.INGEST_SUBJECT_PREFIX}.>"] and not minio["publish_deny"]
    assert minio["subscribe"] == ["_INBOX.>"] and not minio["subscribe_deny"]
    assert names.INGEST_SUBJECTS == [f"{names.INGEST_SUBJECT_PREFIX}.>"], "the stream stores what MinIO may publish"
    assert may_publish(minio, f"{names.INGEST_SUBJECT_PREFIX}.minio")
    job_id = "0b7e2c3a-1d2e-4f50-8a9b-0c1d2e3f4a5b"
    for subject in (names.job_subject("resize"), names.job_subject("pipeline"), "pixq.events.x",
                    names.job_event_subject("acme", job_id), f"pixq.dlq.{job_id}", f"pixq.status.{job_id}",
                    "$JS.API.INFO", f"$JS.API.STREAM.INFO.{names.INGEST_STREAM}",
                    f"$JS.API.STREAM.CREATE.{names.INGEST_STREAM}", f"$JS.API.STREAM.PURGE.{names.INGEST_STREAM}",
                    f"$JS.API.CONSUMER.MSG.NEXT.{names.INGEST_STREAM}.{names.INGEST_CONSUMER}",
                    f"$JS.ACK.{names.INGEST_STREAM}.{names.INGEST_CONSUMER}.1.1.1.1.0", "pixq.ingest"):
        assert not may_publish(minio, subject), f"pixq-minio may publish {subject}"


MINIO_TARGET = "PIXQ"


def _minio_target_env(objs) -> dict[str, dict]:
    """The MinIO container's MINIO_NOTIFY_NATS_*_PIXQ variables, by setting name (ADDRESS, ...)."""
    env = _env(container(objs, "StatefulSet", "pixq-minio", "minio"))
    prefix, suffix = "MINIO_NOTIFY_NATS_", f"_{MINIO_TARGET}"
    return {name[len(prefix):-len(suffix)]: item for name, item in env.items()
            if name.startswith(prefix) and name.endswith(suffix)}


def test_minio_publishes_bucket_events_as_pixq_minio(rendered, overlay):
    """The bundled MinIO's notification target PIXQ: JetStream publishes to pixq.ingest.minio
    (stored by PIXQ_INGEST, allowed to pixq-minio) on the NATS Service, as pixq-minio with the
    password the NATS server has for it, queueing on its own volume while NATS is away; over
    TLS, trusting only the CA, when the render's NATS requires TLS."""
    target = _minio_target_env(rendered)
    values = {k: v.get("value") for k, v in target.items() if "value" in v}
    assert values["ENABLE"] == "on" and values["JETSTREAM"] == "on"
    subject = values["SUBJECT"]
    assert subject == f"{names.INGEST_SUBJECT_PREFIX}.minio"
    assert may_publish(users(_nats_files(rendered)["auth.conf"])[values["USERNAME"]], subject)
    assert values["USERNAME"] == "pixq-minio"
    host, _, port = values["ADDRESS"].partition(":")
    assert port == "4222" and 4222 in [p["port"] for p in one(rendered, "Service", host)["spec"]["ports"]]
    server = _env(container(rendered, "StatefulSet", "pixq-nats", "nats"))
    assert _secret_ref(target["PASSWORD"]) == _secret_ref(server["NATS_MINIO_PASSWORD"])
    assert _secret_ref(target["PASSWORD"])[1] == "MINIO_PASSWORD"
    queue_dir = values["QUEUE_DIR"]
    sts = one(rendered, "StatefulSet", "pixq-minio")
    mounts = {m["mountPath"]: m["name"] for m in container(rendered, "StatefulSet", "pixq-minio", "minio")["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert queue_dir.startswith("/data/.") and mounts["/data"] in claims, \
        "queued events live on the persistent volume, under a name MinIO never lists as a bucket"
    tls = overlay.endswith("-tls")
    assert (values.get("TLS") == "on") is tls
    if tls:
        ca = values["CERT_AUTHORITY"]
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        (mount,) = [m for m in mounts if ca.startswith(m + "/")]
        secret = volumes[mounts[mount]]["secret"]
        assert secret["secretName"] == one(rendered, "Certificate", "pixq-nats")["spec"]["secretName"]
        assert secret["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "MinIO gets the CA only"
    else:
        assert "CERT_AUTHORITY" not in values
    # MinIO reads no other NATS password.
    refs = [_secret_ref(i) for i in _env(container(rendered, "StatefulSet", "pixq-minio", "minio")).values()
            if "secretKeyRef" in i.get("valueFrom", {})]
    nats_secret = _secret_ref(server["NATS_MINIO_PASSWORD"])[0]
    assert [key for name, key in refs if name == nats_secret] == ["MINIO_PASSWORD"]


def test_each_client_uses_its_own_nats_user(rendered):
    server = _env(container(rendered, "StatefulSet", "pixq-nats", "nats"))
    passwords = {name: _secret_ref(item) for name, item in server.items() if name.endswith("_PASSWORD")}
    for dep, key in (("pixq-api", "API_PASSWORD"), ("pixq-worker", "WORKER_PASSWORD")):
        env = _env(container(rendered, "Deployment", dep))
        url = env["NATS_URL"]["value"]
        assert re.fullmatch(rf"(nats|tls)://{dep}:\$\(NATS_PASSWORD\)@pixq-nats:4222", url), f"{dep}: {url}"
        ref = _secret_ref(env["NATS_PASSWORD"])
        assert ref[1] == key, f"{dep} reads {ref}, must read only its own password {key}"
        assert ref in passwords.values(), f"{dep}: {ref} is not a password the NATS server knows"


def test_redis_requires_a_password_from_a_secret(rendered):
    redis = container(rendered, "StatefulSet", "pixq-redis", "redis")
    assert redis["args"] == ["--requirepass", "$(REDIS_PASSWORD)"], redis.get("args")
    env = _env(redis)
    ref = _secret_ref(env["REDIS_PASSWORD"])
    assert _secret_ref(env["REDISCLI_AUTH"]) == ref, "probes must authenticate with the same password"
    assert "PONG" in " ".join(redis["readinessProbe"]["exec"]["command"]), \
        "redis-cli exits 0 on NOAUTH: readiness must look for PONG"
    conf = one(rendered, "ConfigMap", "pixq-redis-config")["data"]["redis.conf"]
    assert not re.search(r"^\s*requirepass", conf, re.M) and "protected-mode yes" in conf
    for dep in PIXQ:
        client = _env(container(rendered, "Deployment", dep))
        assert client["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@pixq-redis:6379/0"
        assert _secret_ref(client["REDIS_PASSWORD"]) == ref


NON_SECRET_FILES = {"PRESETS_FILE"}
"""*_FILE settings that hold configuration, not secrets: mounted from a ConfigMap."""
SECRETISH_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|_KEYS?$|CREDENTIAL", re.I)
URL_WITH_PASSWORD = re.compile(r"[a-z]+://[^/\s:@]*:[^@\s$]+@")


def test_no_plaintext_secret_in_configmaps(rendered):
    values = {v for s in find(rendered, "Secret") for v in s.get("stringData", {}).values() if len(v) >= 6}
    for cm in find(rendered, "ConfigMap"):
        name = cm["metadata"]["name"]
        for key, text in cm.get("data", {}).items():
            assert not SECRETISH_KEY.search(key), f"ConfigMap {name}: key {key} looks like a secret"
            assert "CHANGE_ME" not in text, f"ConfigMap {name}.{key}: a secret placeholder in a ConfigMap"
            assert not URL_WITH_PASSWORD.search(text), f"ConfigMap {name}.{key}: a URL with a password"
            assert not re.search(r"^\s*requirepass\s", text, re.M), f"ConfigMap {name}.{key}: requirepass"
            for match in re.finditer(r"\b(password|pass|token)\s*[:=]\s*(\S+)", text):
                assert match.group(2).startswith("$"), f"ConfigMap {name}.{key}: literal {match.group(0)}"
            for value in values:
                assert value not in text, f"ConfigMap {name}.{key} contains a Secret's value"


def test_secrets_are_files_or_secret_refs(rendered):
    """Every *_FILE points into a read-only Secret mount that projects that file; mounts are
    group-readable only (the pods' fsGroup) and each pod gets only the keys it uses."""
    for dep in PIXQ:
        pod = one(rendered, "Deployment", dep)["spec"]["template"]["spec"]
        c = pod["containers"][0]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        projected = set()
        for name, item in _env(c).items():
            if not name.endswith("_FILE"):
                continue
            directory, _, filename = item["value"].rpartition("/")
            assert directory in mounts, f"{dep}: {name}={item['value']} is not under a mount"
            assert mounts[directory].get("readOnly") is True, f"{dep}: {directory} must be read-only"
            if name in NON_SECRET_FILES:
                config_map = volumes[mounts[directory]["name"]].get("configMap")
                assert config_map, f"{dep}: {name} is configuration: a ConfigMap volume"
                assert filename in {i["path"] for i in config_map["items"]}, f"{dep}: {filename} not projected"
                continue
            secret = volumes[mounts[directory]["name"]].get("secret")
            assert secret, f"{dep}: {name} must come from a Secret volume"
            assert secret.get("defaultMode") == 0o440, f"{dep}: {directory} defaultMode {secret.get('defaultMode')}"
            assert filename in {i["path"] for i in secret["items"]}, f"{dep}: {filename} not projected"
            projected.add(filename)
        for forbidden in ("API_KEYS", "ADMIN_API_KEYS"):
            assert forbidden not in _env(c) and f"{forbidden}_FILE" not in _env(c), f"{dep}: {forbidden}"
        # Both mint download links (the workers in webhook bodies) and read tenants (the
        # workers for settings.webhook_url / webhook_secrets).
        assert {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "URL_SIGNING_KEY", "tenants.yaml"} <= projected, dep
        # Secrets in the environment: only the passwords composed into URLs, and the
        # optional WEBHOOK_SECRETS (test_webhook_secrets_are_optional).
        from_secrets = {name for name, item in _env(c).items() if "secretKeyRef" in item.get("valueFrom", {})}
        assert from_secrets <= {"NATS_PASSWORD", "REDIS_PASSWORD", "WEBHOOK_SECRETS"}, f"{dep}: {from_secrets}"


def test_webhook_secrets_are_optional(rendered, overlay):
    """WEBHOOK_SECRETS comes from the storage Secret's key of that name, optional: a Secret
    created without it (no webhooks) still starts the pods, with no global signing secret. A
    file (WEBHOOK_SECRETS_FILE) could not be optional: pixq refuses a _FILE that is missing."""
    for dep in PIXQ:
        pod = one(rendered, "Deployment", dep)["spec"]["template"]["spec"]
        env = _env(pod["containers"][0])
        assert "WEBHOOK_SECRETS_FILE" not in env, dep
        ref = env["WEBHOOK_SECRETS"]["valueFrom"]["secretKeyRef"]
        (storage,) = [v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == "secrets"]
        assert ref == {"name": storage, "key": "WEBHOOK_SECRETS", "optional": True}, f"{dep}: {ref}"
    secret = find(rendered, "Secret", "pixq-secrets")
    if overlay != "helm-prod":
        value = secret[0]["stringData"]["WEBHOOK_SECRETS"]
        assert value.startswith("whsec_"), "a placeholder pixq refuses as a placeholder, not as malformed"


def test_tenants_file_from_a_secret(rendered, overlay):
    api = one(rendered, "Deployment", "pixq-api")["spec"]["template"]["spec"]
    env = _env(api["containers"][0])
    assert env["TENANTS_FILE"]["value"] == "/etc/pixq/tenants/tenants.yaml"
    (mount,) = [m for m in api["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/pixq/tenants"]
    (volume,) = [v for v in api["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["items"] == [{"key": "tenants.yaml", "path": "tenants.yaml"}]
    secret = find(rendered, "Secret", volume["secret"]["secretName"])
    if overlay == "helm-prod":
        assert not secret, "helm-prod uses an existing tenants Secret"
        return
    from pixq.tenants import parse_tenants_file
    text = secret[0]["stringData"]["tenants.yaml"]
    doc = yaml.safe_load(text)
    assert {t["role"] for t in doc["tenants"]} == {"user", "admin"}
    for tenant in doc["tenants"]:
        assert set(tenant) <= {"name", "role", "keys", "settings"} and tenant["keys"]
    if overlay == "dev":
        parse_tenants_file(text)
    else:
        assert all(k == "sha256:CHANGE_ME" for t in doc["tenants"] for k in t["keys"])


def test_dev_passwords_are_safe_in_urls_and_nats_conf():
    """NATS's config parser reads an unquoted $VAR value as a number, boolean or size when it
    looks like one; URLs need no escaping. The documented password alphabet avoids both."""
    objs = objects("dev")
    for name in ("pixq-nats-auth", "pixq-redis-auth"):
        for key, value in one(objs, "Secret", name)["stringData"].items():
            assert PASSWORD_CHARS.match(value), f"{name}.{key}: {value!r}"


def test_ingress_exposes_only_the_api_and_downloads(rendered):
    """/health/* and /metrics answer without a key: they must not be reachable from outside.
    /uploads is the signed direct-upload endpoint of local storage (authorized by its token)."""
    ingress = one(rendered, "Ingress", "pixq-api")
    paths = [(p["path"], p["pathType"]) for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == [("/api/v1", "Prefix"), ("/files", "Prefix"), ("/uploads", "Prefix")], paths


@pytest.mark.parametrize("render", ["helm-tls", "prod-tls"])
def test_nats_tls(render):
    """Helm nats.tls.enabled / kustomize components/nats-tls: a cert-manager Certificate for the
    NATS Services, mounted by NATS, whose CA (only) the clients trust over tls://."""
    objs = objects(render)
    cert = one(objs, "Certificate", "pixq-nats")
    validate_object(cert)
    spec = cert["spec"]
    assert spec["issuerRef"] == {"name": "pixq-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert "pixq-nats" in spec["dnsNames"], "clients connect to the pixq-nats Service"
    assert "server auth" in spec["usages"]
    sts = one(objs, "StatefulSet", "pixq-nats")["spec"]["template"]["spec"]
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in sts["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in sts["containers"][0]["volumeMounts"]}
    assert secret_volumes[mounts["/etc/nats/tls"]] == spec["secretName"]
    conf = "\n".join(one(objs, "ConfigMap", "pixq-nats-config")["data"].values())
    assert "cert_file: /etc/nats/tls/tls.crt" in conf and "key_file: /etc/nats/tls/tls.key" in conf
    assert "no_advertise: true" in conf, "with TLS, clients must not be sent to pod IPs"
    for name in ("pixq-api", "pixq-worker"):
        dep = one(objs, "Deployment", name)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in dep["containers"][0]["env"]}
        assert env["NATS_URL"].startswith("tls://"), f"{name}: NATS_URL {env['NATS_URL']}"
        ca = env["NATS_TLS_CA_FILE"]
        volumes = {v["name"]: v for v in dep["volumes"]}
        (mount,) = [m for m in dep["containers"][0]["volumeMounts"] if ca.startswith(m["mountPath"] + "/")]
        assert volumes[mount["name"]]["secret"]["secretName"] == spec["secretName"]
        assert volumes[mount["name"]]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], \
            "clients get the CA only, never the server key"


def test_nats_tls_is_the_same_with_helm_and_kustomize():
    certs = [one(objects(render), "Certificate", "pixq-nats")["spec"] for render in ("helm-tls", "prod-tls")]
    assert certs[0] == certs[1]


def test_no_tls_without_asking(rendered, overlay):
    if overlay.endswith("-tls"):
        return
    assert not find(rendered, "Certificate")
    for dep in PIXQ:
        assert _env(container(rendered, "Deployment", dep))["NATS_URL"]["value"].startswith("nats://")


def test_env_references_are_defined_before_use(rendered):
    """$(VAR) expands only variables defined earlier in the container's env (or its envFrom):
    a NATS_URL listed before its NATS_PASSWORD would reach pixq with a literal $(NATS_PASSWORD)."""
    for w in workloads(rendered):
        for c in containers(w):
            defined = set()
            for source in c.get("envFrom", []):
                defined |= set(one(rendered, "ConfigMap", source["configMapRef"]["name"])["data"])
            for item in c.get("env", []):
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(item.get("value", ""))):
                    assert ref in defined, f"{w['metadata']['name']}/{c['name']}: {item['name']} uses $({ref}) before it is defined"
                defined.add(item["name"])
            for arg in c.get("args", []) + c.get("command", []):
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                    assert ref in defined, f"{w['metadata']['name']}/{c['name']}: argument uses undefined $({ref})"
