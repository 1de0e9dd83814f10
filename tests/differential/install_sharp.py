"""Install sharp, pinned by package-lock.json, into tests/differential/node_modules (git-ignored).

Why npm: sharp's npm package brings its own prebuilt libvips (@img/sharp-libvips-<platform>),
so `npm ci` is the whole install: no compiler, no other download. The lock file pins sharp
and every transitive package with its integrity hash.

sharp 0.35 needs node >= 20.9 (this project's machines and CI have node 20 from nodesource).
Debian bookworm's own nodejs is 18.19: there this installs sharp 0.34.5 (the last release for
node 18, libvips 8.17) instead and says so loudly: the differential test then fails with one clear
message (it needs sharp's libvips to be pyvips'), the bench still runs. Without node at all it
installs nodejs and npm with apt
(as root), like bench/common.py does for loadtest.

Idempotent: a no-op when node_modules already holds the wanted sharp for this lock file.
Usage: python tests/differential/install_sharp.py   (run by `make sharp`, which `make test` and
`make bench` depend on)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "package-lock.json"
NODE_MODULES = HERE / "node_modules"
STAMP = NODE_MODULES / ".pixq-installed.json"
MIN_NODE = (20, 9, 0)
"""sharp 0.35's engines field."""
FALLBACK_SHARP = "0.34.5"
FALLBACK_MIN_NODE = (18, 17, 0)
"""sharp 0.34.5's engines field: ^18.17.0 || ^20.3.0 || >=21.0.0."""


def say(message: str) -> None:
    print(f"install_sharp: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    say(f"ERROR: {message}")
    raise SystemExit(2)


def pinned_version() -> str:
    return json.loads(LOCK.read_text())["packages"]["node_modules/sharp"]["version"]


def ensure_node() -> None:
    """node and npm on PATH; installed with apt when missing and we are root."""
    if shutil.which("node") and shutil.which("npm"):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        fail("node and npm are missing: install Node.js >= 20.9 (https://nodejs.org or nodesource) and rerun")
    say("installing nodejs and npm with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs", "npm"], check=True, env=env)


def node_version() -> tuple[int, int, int]:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    found = re.match(r"v(\d+)\.(\d+)\.(\d+)", out.strip())
    if not found:
        fail(f"cannot read the node version from {out!r}")
    return tuple(int(part) for part in found.groups())  # type: ignore[return-value]


def stamp_for(sharp: str) -> dict:
    return {"sharp": sharp, "lock_sha256": hashlib.sha256(LOCK.read_bytes()).hexdigest()}


def loaded_version() -> str | None:
    """The sharp version node actually loads from node_modules (None when it does not load:
    missing, or prebuilt binaries for another platform)."""
    proc = subprocess.run(["node", "--input-type=module", "-e",
                           "import sharp from 'sharp'; console.log(sharp.versions.sharp)"],
                          cwd=HERE, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def installed(sharp: str) -> bool:
    try:
        if json.loads(STAMP.read_text()) != stamp_for(sharp):
            return False
    except (OSError, ValueError):
        return False
    return loaded_version() == sharp


def npm(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(["npm", *args, "--no-audit", "--no-fund", "--loglevel=error"], cwd=cwd,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"npm {' '.join(args)} failed in {cwd}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def install_fallback() -> None:
    """sharp FALLBACK_SHARP into node_modules, resolved in a scratch folder so the committed
    package.json and lock file (which pin the newer release) stay untouched."""
    with tempfile.TemporaryDirectory(prefix="pixq-sharp-") as scratch:
        (Path(scratch) / "package.json").write_text(json.dumps(
            {"name": "pixq-differential-fallback", "private": True, "dependencies": {"sharp": FALLBACK_SHARP}}))
        npm(["install", "--omit=dev", "--no-package-lock"], Path(scratch))
        shutil.rmtree(NODE_MODULES, ignore_errors=True)
        shutil.move(str(Path(scratch) / "node_modules"), NODE_MODULES)


def main() -> int:
    ensure_node()
    node = node_version()
    node_text = ".".join(map(str, node))
    if node >= MIN_NODE:
        want = pinned_version()
    elif node >= FALLBACK_MIN_NODE:
        want = FALLBACK_SHARP
        say(f"WARNING: node {node_text} is older than 20.9, which sharp {pinned_version()} (the pinned release) "
            f"needs: installing sharp {want} instead (libvips 8.17). tests/differential will FAIL with it, "
            "naming the libvips mismatch (it compares against pyvips' libvips); bench's engine-vs-sharp "
            "figures run but compare different libvips. Install node >= 20.9 (nodesource) and rerun `make sharp`.")
    else:
        fail(f"node {node_text} is too old for any supported sharp (needs >= 18.17; 20.9 for the pinned "
             f"{pinned_version()}): install Node.js >= 20.9")
    if installed(want):
        say(f"sharp {want} already installed in {NODE_MODULES.relative_to(HERE.parents[1])}")
        return 0
    say(f"installing sharp {want} (with its prebuilt libvips) into {NODE_MODULES.relative_to(HERE.parents[1])} (npm)")
    if want == pinned_version():
        npm(["ci", "--omit=dev"], HERE)
    else:
        install_fallback()
    got = loaded_version()
    if got != want:
        fail(f"after the install node loads sharp {got!r}, expected {want}")
    STAMP.write_text(json.dumps(stamp_for(want)))
    say(f"sharp {want} installed (node {node_text})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
