"""Secrets from files (``<NAME>_FILE``) and refused placeholders: through load_settings with
a patched environment, and through the real pixq-api / pixq-worker binaries."""

import json
import os
import subprocess
import urllib.request

import pytest

from pixq.settings import SECRET_FIELDS, load_settings
from tests.stack import BIN, Stack, http_status, stack_env
from tests.tls import nats_server_conf, redis_server_conf

pytestmark = pytest.mark.timeout(60)

# A sample value for each secret, and what Settings makes of it.
SAMPLES = {
    "img_key": ("943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881", "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"),
    "img_salt": ("520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5", "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"),
    "nats_url": ("nats://pixq:n%40ts-pw@nats.internal:4222", "nats://pixq:n%40ts-pw@nats.internal:4222"),
    "redis_url": ("rediss://pixq:r3dis-pw@redis.internal:6380/0", "rediss://pixq:r3dis-pw@redis.internal:6380/0"),
    "redis_sentinel_password": ("s3ntinel-pw", "s3ntinel-pw"),
    "minio_access_key": ("pixq-access", "pixq-access"),
    "minio_secret_key": ("pixq-secret-0123456789", "pixq-secret-0123456789"),
    "url_signing_key": ("c2lnbmluZy1rZXk", "c2lnbmluZy1rZXk"),
    "api_keys": ("ci=tok-ci,web=tok-web", {"tok-ci": "ci", "tok-web": "web"}),
    "admin_api_keys": ("ops=tok-ops", {"tok-ops": "ops"}),
    "webhook_secrets": ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_c2Vjb25k",
                        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_c2Vjb25k"),
}


@pytest.fixture
def clean_env(monkeypatch):
    """No pixq variable from the outer environment leaks into these checks."""
    for name in list(os.environ):
        if name.split("_FILE")[0].lower() in {*SECRET_FIELDS, "storage_type"} or name.startswith("NATS_"):
            monkeypatch.delenv(name)
    return monkeypatch


def refused(capsys) -> str:
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    return capsys.readouterr().err


PARTNERS = {"img_key": "IMG_SALT", "img_salt": "IMG_KEY"}
"""A key needs its salt and a salt its key (IMG_KEY / IMG_SALT pairs): set the other to one byte."""


def test_every_secret_field_is_covered():
    assert set(SAMPLES) == set(SECRET_FIELDS)


@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_secret_from_file(field, tmp_path, clean_env):
    raw, parsed = SAMPLES[field]
    secret = tmp_path / field
    secret.write_text(raw + "\n")  # secret files usually end with a newline; it is not part of the secret
    clean_env.setenv(f"{field.upper()}_FILE", str(secret))
    if field in PARTNERS:
        clean_env.setenv(PARTNERS[field], "00")
    assert getattr(load_settings(), field) == parsed


@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_value_and_file_together_name_the_variable(field, tmp_path, clean_env, capsys):
    raw, _ = SAMPLES[field]
    secret = tmp_path / field
    secret.write_text(raw)
    clean_env.setenv(field.upper(), raw)
    clean_env.setenv(f"{field.upper()}_FILE", str(secret))
    err = refused(capsys)
    assert f"invalid configuration: {field.upper()}_FILE: set {field.upper()} or {field.upper()}_FILE" in err


def test_unreadable_or_empty_secret_file_is_refused(tmp_path, clean_env, capsys):
    clean_env.setenv("MINIO_SECRET_KEY_FILE", str(tmp_path / "missing"))
    assert "invalid configuration: MINIO_SECRET_KEY_FILE: cannot read" in refused(capsys)
    (tmp_path / "empty").write_text("\n")
    clean_env.setenv("MINIO_SECRET_KEY_FILE", str(tmp_path / "empty"))
    assert "invalid configuration: MINIO_SECRET_KEY_FILE:" in refused(capsys)
    # An empty API_KEYS_FILE must not silently leave the API open.
    clean_env.delenv("MINIO_SECRET_KEY_FILE")
    clean_env.setenv("API_KEYS_FILE", str(tmp_path / "empty"))
    assert "invalid configuration: API_KEYS_FILE:" in refused(capsys)


PLACEHOLDERS = {
    "nats_url": "nats://pixq:CHANGE_ME@nats:4222",
    "redis_url": "redis://:change_me@redis:6379/0",
    "minio_access_key": "CHANGE_ME",
    "minio_secret_key": "CHANGE_ME",
    "url_signing_key": "CHANGE_ME",
    "api_keys": "ci=CHANGE_ME",
    "admin_api_keys": "CHANGE_ME=tok",
}


@pytest.mark.parametrize("field", sorted(PLACEHOLDERS))
@pytest.mark.parametrize("from_file", [False, True])
def test_placeholder_is_refused(field, from_file, tmp_path, clean_env, capsys):
    if from_file:
        (tmp_path / field).write_text(PLACEHOLDERS[field])
        clean_env.setenv(f"{field.upper()}_FILE", str(tmp_path / field))
    else:
        clean_env.setenv(field.upper(), PLACEHOLDERS[field])
    assert f"invalid configuration: {field.upper()}: holds the placeholder CHANGE_ME" in refused(capsys)


@pytest.mark.parametrize("field", ["minio_access_key", "minio_secret_key"])
def test_minio_default_credential_refused_with_s3_storage(field, clean_env, capsys):
    other = "minio_secret_key" if field == "minio_access_key" else "minio_access_key"
    clean_env.setenv("STORAGE_TYPE", "minio")
    clean_env.setenv(field.upper(), "minioadmin")
    clean_env.setenv(other.upper(), "a-real-credential")
    assert f"invalid configuration: {field.upper()}: the default minioadmin" in refused(capsys)


def test_minio_default_credential_allowed_with_local_storage(clean_env):
    assert load_settings().minio_secret_key == "minioadmin"  # unused by local storage: make up needs nothing


# --- the real binaries --------------------------------------------------------------------------


def run_binary(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / script)], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("script", ["pixq-api", "pixq-worker"])
def test_binaries_exit_2_naming_the_variable(script, tmp_path):
    cases = [
        ({"API_KEYS": "ci=CHANGE_ME"} if script == "pixq-api" else {"REDIS_URL": "redis://:CHANGE_ME@x:6379/0"},
         "API_KEYS" if script == "pixq-api" else "REDIS_URL"),
        ({"STORAGE_TYPE": "minio"}, "MINIO_ACCESS_KEY"),  # minioadmin defaults with S3 storage
    ]
    secret = tmp_path / "signing-key"
    secret.write_text("from-a-file")
    cases.append(({"URL_SIGNING_KEY": "inline", "URL_SIGNING_KEY_FILE": str(secret)}, "URL_SIGNING_KEY_FILE"))
    for overrides, variable in cases:
        done = run_binary(script, stack_env(1, 1, tmp_path, **overrides))
        assert done.returncode == 2, (overrides, done.stderr[-2000:])
        assert f"invalid configuration: {variable}:" in done.stderr, (overrides, done.stderr[-2000:])
        assert "Traceback" not in done.stderr


def test_binaries_read_their_secrets_from_files(tmp_path):
    """NATS and Redis require passwords; pixq-api and pixq-worker get them, the API keys and
    the signing key only from files, and become ready; the API then requires the key."""
    nats = nats_server_conf(tmp_path, 'authorization { user: pixq, password: "n@ts pw" }')
    redis = redis_server_conf(tmp_path, ["requirepass r3dis-pw"])
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    files = {"NATS_URL": f"nats://pixq:n%40ts%20pw@127.0.0.1:{nats.port}\n",
             "REDIS_URL": f"redis://:r3dis-pw@127.0.0.1:{redis.port}/0\n",
             "API_KEYS": "ci=tok-from-file\n", "URL_SIGNING_KEY": "signing-from-file\n"}
    for name, value in files.items():
        (secrets / name.lower()).write_text(value)
    env = stack_env(nats.port, redis.port, tmp_path)
    for name in files:
        env.pop(name, None)
        env[f"{name}_FILE"] = str(secrets / name.lower())
    stack = Stack(env, tmp_path)
    try:
        stack.start_api()
        worker = stack.start_worker()
        assert http_status(f"{worker.metrics_url}/health/ready") == 200
        unknown = f"{stack.api_url}/api/v1/jobs/00000000-0000-4000-8000-000000000000"
        assert http_status(unknown) == 401
        request = urllib.request.Request(unknown, headers={"Authorization": "Bearer tok-from-file"})
        try:
            urllib.request.urlopen(request, timeout=5)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
            body = json.loads(exc.read())
        assert status == 404 and body["error"]["code"] == "NOT_FOUND"
        # No secret value appears in the processes' logs.
        logs = stack.api.log.read_text() + worker.log.read_text()
        for value in ("n@ts pw", "n%40ts%20pw", "r3dis-pw", "tok-from-file", "signing-from-file"):
            assert value not in logs
    finally:
        stack.stop()
        nats.stop()
        redis.stop()
