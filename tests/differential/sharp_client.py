"""Talk to sharp_runner.mjs: one Node process running sharp, driven by JSON lines.

Shared by the differential test (tests/differential/conftest.py) and the bench's "engine vs
sharp" section (bench/engine_sharp.py), so both drive sharp the same way. sharp itself lives in
tests/differential/node_modules, installed by `make sharp` (install_sharp.py); nothing here
installs anything: a missing install is an error naming the command that fixes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "sharp_runner.mjs"
NODE_MODULES = HERE / "node_modules"


class SharpMissing(RuntimeError):
    """sharp (or node) is not installed where the runner looks for it."""


def check_installed() -> None:
    """Raise SharpMissing naming the fix when node or tests/differential/node_modules/sharp is absent."""
    if shutil.which("node") is None:
        raise SharpMissing("node is not installed: run `make sharp` (installs nodejs with apt, then sharp with npm)")
    if not (NODE_MODULES / "sharp" / "package.json").is_file():
        raise SharpMissing(f"sharp is not installed in {NODE_MODULES}: run `make sharp` "
                           "(python tests/differential/install_sharp.py)")


class SharpRunner:
    """One sharp_runner.mjs process; requests are answered in order, one at a time."""

    def __init__(self) -> None:
        check_installed()
        # stderr goes to a file, not a pipe: a chatty Node could otherwise block on a full pipe.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(["node", str(RUNNER)], cwd=HERE, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its answer; raise RuntimeError if the runner failed."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(payload) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            self._stderr.seek(0)
            raise RuntimeError(f"sharp_runner.mjs exited ({self._proc.poll()}): {self._stderr.read()[-2000:]}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"sharp_runner.mjs: {reply.get('error')}")
        return reply

    def versions(self) -> dict[str, Any]:
        """sharp's and its libvips' versions, the node version, concurrency and cache settings."""
        return self.request({"type": "versions"})

    def render(self, cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Render every case (see sharp_runner.mjs); results by case id."""
        return {result["id"]: result for result in self.request({"type": "render", "cases": cases})["results"]}

    def bench(self, case: dict[str, Any], repetitions: int) -> list[float]:
        """Milliseconds of each of ``repetitions`` renders of one case, input already in memory."""
        return self.request({"type": "bench", "case": case, "repetitions": repetitions})["ms"]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the runner's read loop ends and Node exits
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __enter__(self) -> "SharpRunner":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
