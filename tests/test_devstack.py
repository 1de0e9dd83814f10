"""`make up`'s supervisor (pixq.devstack): the whole stack comes up, serves a job, and Ctrl-C stops every child."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from tests.helpers import make_image
from tests.servers import free_port
from tests.stack import BIN


def children_of(pid: int) -> list[int]:
    """Every descendant pid (children run in their own sessions, so not via the process group)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == parent:
                    found.append(int(entry))
                    frontier.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_devstack_serves_a_job_and_ctrl_c_stops_every_child(tmp_path):
    api_port = free_port()
    env = {**os.environ, "API_PORT": str(api_port), "PIXQ_DEV_NATS_PORT": str(free_port()),
           "PIXQ_DEV_REDIS_PORT": str(free_port()), "LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "pixq.devstack", "--workers", "2", "--root", str(tmp_path)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    up = threading.Event()

    def drain() -> None:
        for line in process.stdout:
            lines.append(line)
            if "pixq is up" in line:
                up.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert up.wait(60), "".join(lines)
        assert f"http://127.0.0.1:{api_port}/api/v1/resize" in "".join(lines)  # the printed example
        children = children_of(process.pid)
        assert len(children) >= 5  # nats, redis, api, 2 workers

        source = tmp_path / "in.jpg"
        source.write_bytes(make_image(300, 200))
        done = subprocess.run([str(BIN / "pixq"), "--api-url", f"http://127.0.0.1:{api_port}", "submit", "resize",
                               str(source), "--width", "30", "--wait"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "completed"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError("the stack did not stop within 60 s; its last lines:\n" + "".join(lines[-40:]))
        reader.join(10)  # every line the stack printed before exiting (its stdout is closed now)
        assert status == 0, "".join(lines[-40:])
    assert any(line.startswith("pixq: worker-1 stopped in") for line in lines), "".join(lines[-40:])
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if alive(pid)], "children left running after Ctrl-C"
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health/live", timeout=1)
        raise AssertionError("the API still answers after Ctrl-C")
    except OSError:
        pass
