"""Run corpus files through child processes, detecting crashes and hangs per file."""

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also run as a script: python tests/imaging/corpus.py
    sys.path.insert(0, str(REPO))

from tests.fixtures import corpus_dir  # noqa: E402

CHILD = Path(__file__).with_name("corpus_child.py")


def corpus_files(root: Path | None = None) -> list[Path]:
    """Every file under <root>/pillow and <root>/sharp; root defaults to corpus_dir()
    (PIXQ_CORPUS_DIR, else the vendored tests/fixtures). Raises if there are none."""
    root = root or corpus_dir()
    files = []
    for folder in ("pillow", "sharp"):
        base = root / folder
        if base.is_dir():
            files += sorted(p for p in base.rglob("*") if p.is_file() and p.name != "LICENSE"
                            and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no corpus images under {root}/pillow or {root}/sharp "
                                "(PIXQ_CORPUS_DIR, default tests/fixtures)")
    return files


def _worker(queue: list[Path], lock: threading.Lock, results: dict, per_file_timeout: float,
            child_command: list[str]) -> None:
    while True:
        with lock:
            if not queue:
                return
            batch, queue[:] = queue[:25], queue[25:]
        pending = list(batch)
        while pending:
            child = subprocess.Popen(child_command, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=str(REPO), env={**os.environ, "VIPS_WARNING": "0"})
            child.stdin.write("".join(f"{p}\n" for p in pending).encode())
            child.stdin.close()
            current = None
            buffer = b""
            deadline = time.monotonic() + per_file_timeout
            while True:
                remaining = deadline - time.monotonic()
                ready, _, _ = select.select([child.stdout], [], [], max(0.0, remaining))
                if not ready:
                    child.kill()
                    child.wait()
                    failed = current or pending[0]
                    results[str(failed)] = {"file": str(failed), "resize": "HANG", "crop": "HANG"}
                    pending = pending[pending.index(Path(str(failed))) + 1:]
                    break
                chunk = os.read(child.stdout.fileno(), 65536)
                if not chunk:  # child exited
                    code = child.wait()
                    if current is not None:
                        verdict = f"CRASH({code})"
                        results[str(current)] = {"file": str(current), "resize": verdict, "crop": verdict}
                        pending = pending[pending.index(Path(str(current))) + 1:]
                    else:
                        pending = []
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message = json.loads(line)
                    if "start" in message:
                        current = Path(message["start"])
                        deadline = time.monotonic() + per_file_timeout
                    else:
                        results[message["file"]] = message
                        current = None
            child.stdout.close()


def run_corpus(files: list[Path], workers: int = 2, per_file_timeout: float = 60.0,
               child: list[str] | None = None) -> dict[str, dict]:
    """{path: {"resize": code, "crop": code, ...}}; codes include HANG and CRASH(rc)."""
    child = child or [sys.executable, str(CHILD)]
    queue, lock, results = list(files), threading.Lock(), {}
    threads = [threading.Thread(target=_worker, args=(queue, lock, results, per_file_timeout, child))
               for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


if __name__ == "__main__":
    from collections import Counter

    started = time.monotonic()
    found = run_corpus(corpus_files())
    elapsed = time.monotonic() - started
    print(json.dumps(found, indent=1))
    print("histogram resize:", Counter(r["resize"] for r in found.values()))
    print("histogram crop:", Counter(r["crop"] for r in found.values()))
    print(f"{len(found)} files in {elapsed:.1f}s")
