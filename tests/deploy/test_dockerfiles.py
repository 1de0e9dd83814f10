"""Static checks of Dockerfile.api / Dockerfile.worker / .dockerignore (no Docker engine needed)."""

import fnmatch
import json
import re
import shlex
import tomllib

import pytest

from deploy_support import REPO

IMAGES = {"Dockerfile.api": ("pixq-api", 8080), "Dockerfile.worker": ("pixq-worker", 9091)}
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "libvips-dev", "python3-dev")
OCI_LABELS = ("title", "description", "version", "revision", "source", "licenses")


def parse_dockerfile(path):
    """[(instruction, argument)] with continuation lines joined and comments dropped."""
    instructions, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        inst, _, arg = buf.strip().partition(" ")
        instructions.append((inst.upper(), arg.strip()))
        buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    return instructions


def stages(instructions):
    """{'args': {name: default}, 'stages': [{'from': image, 'name': alias, 'body': [...]}]}."""
    args, out = {}, []
    for inst, arg in instructions:
        if inst == "FROM":
            parts = arg.split()
            image = [p for p in parts if not p.startswith("--")][0]
            name = parts[parts.index("AS") + 1] if "AS" in parts else (
                parts[parts.index("as") + 1] if "as" in parts else None)
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
            out.append({"from": image, "name": name, "body": []})
        elif not out and inst == "ARG":
            key, _, default = arg.partition("=")
            args[key] = default
        elif out:
            out[-1]["body"].append((inst, arg))
    return {"args": args, "stages": out}


def parse_labels(arg):
    labels = {}
    for token in shlex.split(arg):
        key, _, value = token.partition("=")
        labels[key] = value
    return labels


@pytest.fixture(params=sorted(IMAGES))
def dockerfile(request):
    path = REPO / request.param
    assert path.exists(), f"{request.param} missing"
    return request.param, stages(parse_dockerfile(path))


def test_multi_stage_on_pinned_slim_python(dockerfile):
    name, df = dockerfile
    assert len(df["stages"]) >= 2, f"{name}: not multi-stage"
    for stage in df["stages"]:
        image = stage["from"]
        if image in {s["name"] for s in df["stages"]}:
            continue
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-bookworm|-bullseye)?", image), \
            f"{name}: base {image} is not a pinned python:3.11 slim tag"


def test_final_stage_has_no_build_tools(dockerfile):
    name, df = dockerfile
    final = df["stages"][-1]
    for inst, arg in final["body"]:
        if inst == "RUN":
            assert not any(re.search(rf"\b{re.escape(t)}\b", arg) for t in BUILD_TOOLS), \
                f"{name}: final stage installs build tools: {arg}"
            assert "pip install" not in arg, f"{name}: final stage runs pip: {arg}"
    assert any(inst == "COPY" and "--from=" in arg for inst, arg in final["body"]), \
        f"{name}: final stage copies nothing from the builder"
    builder = df["stages"][0]["body"]
    pip_runs = [arg for inst, arg in builder if inst == "RUN" and "pip install" in arg]
    assert pip_runs and all("--no-cache-dir" in a or "PIP_NO_CACHE_DIR" in str(builder) for a in pip_runs)
    assert any("requirements.lock" in a for a in pip_runs), f"{name}: builder ignores the lock file"


def test_non_root_numeric_user(dockerfile):
    name, df = dockerfile
    users = [arg for inst, arg in df["stages"][-1]["body"] if inst == "USER"]
    assert users, f"{name}: no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]} must be a numeric non-root uid"


def test_entrypoint_expose_labels(dockerfile):
    name, df = dockerfile
    script, port = IMAGES[name]
    body = df["stages"][-1]["body"]
    entry = [arg for inst, arg in body if inst == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == [script], f"{name}: ENTRYPOINT must be exec-form [{script!r}]"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert script in scripts, f"{script} is not a console script in pyproject.toml"
    exposed = {int(p.split("/")[0]) for inst, arg in body if inst == "EXPOSE" for p in arg.split()}
    assert port in exposed, f"{name}: EXPOSE {port} missing"
    labels = {}
    for inst, arg in body:
        if inst == "LABEL":
            labels.update(parse_labels(arg))
    missing = [k for k in OCI_LABELS if not labels.get(f"org.opencontainers.image.{k}")]
    assert not missing, f"{name}: missing OCI labels {missing}"
    envs = " ".join(arg for inst, arg in body if inst == "ENV")
    assert "TMPDIR=/tmp" in envs, f"{name}: scratch files must go to /tmp (an emptyDir in k8s)"
    healthchecks = [arg for inst, arg in body if inst == "HEALTHCHECK"]
    assert not healthchecks or str(port) in healthchecks[-1]


def test_lock_file_pins_every_dependency():
    lock = REPO / "deploy" / "requirements.lock"
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+!\-]+", line), f"unpinned: {line}"
        pins[re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()] = line
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", dep).group(0)).lower()
        assert name in pins, f"dependency {name} is not pinned in deploy/requirements.lock"
    assert "pixq" not in pins


def _ignored(path, patterns):
    ignored = False
    for negate, pattern in patterns:
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.lstrip("*/")) \
                or path.startswith(pattern.rstrip("/") + "/"):
            ignored = not negate
    return ignored


def test_dockerignore():
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append((line.startswith("!"), line.lstrip("!")))
    for path in (".git", ".venv", "tests", "bench", "deploy/k8s", "deploy/crds", "deploy/tools/bin"):
        assert _ignored(path, patterns), f".dockerignore does not exclude {path}"
    for name in IMAGES:
        df = stages(parse_dockerfile(REPO / name))
        for stage in df["stages"]:
            for inst, arg in stage["body"]:
                if inst == "COPY" and "--from=" not in arg:
                    for src in arg.split()[:-1]:
                        assert not _ignored(src.rstrip("/"), patterns), f"{name}: COPY {src} is dockerignored"
