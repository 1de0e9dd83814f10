"""Shared bench plumbing: paths, tool installs, inputs, the local stack, timing helpers."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pixq.devstack import free_port

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
WORK = BENCH / ".work"
TOOLS = BENCH / ".tools"
THUMBOR_VENV = BENCH / ".thumbor-venv"
RESULTS = BENCH / "results"
# the two photos are vendored in tests/fixtures/sharp; PIXQ_CORPUS_DIR (or the older PIXQ_CORPUS) overrides
CORPUS = Path(os.environ.get("PIXQ_CORPUS_DIR") or os.environ.get("PIXQ_CORPUS")
              or REPO / "tests" / "fixtures") / "sharp"
PHOTOS = {"photo": "2569067123_aca715a2ee_o.jpg", "gainmap": "gain-map.jpg"}
LOADTEST_VERSION = "8.2.1"
THUMBOR_SPEC = "thumbor==7.8.0"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else 0.0


def paired_ratio(numerators: list[float], denominators: list[float]) -> float | None:
    """The median of each pair's ratio, for runs taken in alternation (raw, stack, raw, stack):
    each pair shares the machine's speed of its moment. The ratio of the two medians mixes
    runs of different moments: at 04:09 it read 0.81x for uploads whose pairs read 0.64, 0.86
    and 0.69. None unless both sides have the same, non-zero number of runs."""
    if not numerators or len(numerators) != len(denominators) or not all(denominators):
        return None
    return round(statistics.median(a / b for a, b in zip(numerators, denominators)), 2)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kwargs)


# --- tools (installed on first use, so `make bench` works on a fresh machine) -------------


def ensure_py_spy() -> Path | None:
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        log("installing py-spy into the venv (pip)")
        try:
            run([sys.executable, "-m", "pip", "install", "-q", "py-spy>=0.3.14"])
        except subprocess.CalledProcessError as exc:
            log(f"py-spy install failed: {exc.stderr[-300:]}")
            return None
    return exe if exe.exists() else None


def ensure_loadtest() -> Path:
    """npm's `loadtest` (open-loop with --rps): requests leave on a timer, not when the previous answered."""
    module = TOOLS / "node_modules" / "loadtest"
    if not module.exists():
        if shutil.which("npm") is None:
            log("installing nodejs and npm with apt")
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs", "npm"], check=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        TOOLS.mkdir(parents=True, exist_ok=True)
        log(f"installing loadtest@{LOADTEST_VERSION} into {TOOLS.relative_to(REPO)} (npm)")
        run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(TOOLS),
             f"loadtest@{LOADTEST_VERSION}"])
    return module


def ensure_thumbor() -> Path:
    exe = THUMBOR_VENV / "bin" / "thumbor"
    if not exe.exists():
        python = shutil.which("python3.11") or sys.executable
        log(f"creating {THUMBOR_VENV.relative_to(REPO)} with {python} and installing {THUMBOR_SPEC} (pip)")
        run([python, "-m", "venv", str(THUMBOR_VENV)])
        run([str(THUMBOR_VENV / "bin" / "pip"), "install", "-q", THUMBOR_SPEC])
    return exe


# --- machine -------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, user + system CPU ticks) of every process now on the machine."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _steal_ticks() -> int:
    """CPU time the hypervisor gave to other guests (the 8th field of /proc/stat's cpu line)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


class LoadMonitor:
    """Was anything else using this machine while a section ran? ``make bench`` flags such a run.

    The load average alone cannot say: the bench itself keeps more runnable threads than there
    are cores (a saturated stack is the point of a throughput run), and a section's 1-min
    average still carries the previous section's load. So it is recorded (start, highest,
    end) but the verdict comes from *foreign* CPU: every INTERVAL seconds, the user+system
    CPU of every process that is not this bench or one of its descendants (a pid once seen
    as ours stays ours, even when reparented), plus the hypervisor's steal time. A section is
    BUSY when that foreign CPU averaged more than BUSY_MEAN of the cores over the section,
    or more than BUSY_PEAK of them in any interval. A foreign process that starts and ends
    between two samples is not seen (an undercount: a test suite's short-lived children); its
    parent, if it stays, is. Reading /proc costs this process 1–3 ms per sample (a few hundred
    processes), i.e. ≤ 0.15 % of a core."""

    INTERVAL = 2.0
    BUSY_MEAN = 0.10
    BUSY_PEAK = 0.50

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.ours: set[int] = {os.getpid()}
        self.samples: list[float] = []  # foreign CPU of each interval, in cores
        self.load_max = 0.0
        self._stop = None
        self._thread = None

    def _update_ours(self, table: dict[int, tuple[int, int]]) -> None:
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _) in table.items():
                if pid not in self.ours and ppid in self.ours:
                    self.ours.add(pid)
                    grew = True

    def _foreign(self, table: dict[int, tuple[int, int]]) -> int:
        return sum(ticks for pid, (_, ticks) in table.items() if pid not in self.ours)

    def _sample_loop(self) -> None:
        table = _proc_table()
        self._update_ours(table)
        last_cpu = {pid: ticks for pid, (_, ticks) in table.items() if pid not in self.ours}
        last_steal, last_time = _steal_ticks(), time.monotonic()
        while not self._stop.wait(self.INTERVAL):
            table = _proc_table()
            self._update_ours(table)
            steal, now = _steal_ticks(), time.monotonic()
            foreign = steal - last_steal
            for pid, (_, ticks) in table.items():
                if pid not in self.ours:
                    foreign += max(0, ticks - last_cpu.get(pid, 0))
            self.samples.append(foreign / _TICKS / (now - last_time))
            last_cpu = {pid: ticks for pid, (_, ticks) in table.items() if pid not in self.ours}
            last_steal, last_time = steal, now
            self.load_max = max(self.load_max, os.getloadavg()[0])

    def __enter__(self) -> "LoadMonitor":
        import threading
        self.load_start = load_average()
        self.load_max = self.load_start[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name="load-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.load_end = load_average()

    def figures(self) -> dict:
        mean = sum(self.samples) / len(self.samples) if self.samples else 0.0
        peak = max(self.samples, default=0.0)
        reasons = []
        if mean > self.BUSY_MEAN * self.cores:
            reasons.append(f"other processes used {mean:.2f} cores on average (> {self.BUSY_MEAN:g} x {self.cores})")
        if peak > self.BUSY_PEAK * self.cores:
            reasons.append(f"other processes used {peak:.2f} cores in one {self.INTERVAL:g} s interval "
                           f"(> {self.BUSY_PEAK:g} x {self.cores})")
        return {"load_average_start": self.load_start, "load_average_max_1min": round(self.load_max, 2),
                "load_average_end": getattr(self, "load_end", load_average()),
                "foreign_cpu_cores_mean": round(mean, 3), "foreign_cpu_cores_max": round(peak, 3),
                "samples": len(self.samples), "cores": self.cores, "busy": bool(reasons), "busy_reasons": reasons}


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process (threads started later inherit their creator's mask)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass


def machine_info() -> dict:
    import pyvips
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))

    def version(argv: list[str], pattern: str = r"v?(\d+\.\d+\.\d+)") -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            found = re.search(pattern, out.stdout + out.stderr)
            return found.group(1) if found else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"

    thumbor = THUMBOR_VENV / "bin" / "python"
    return {
        "cpu_model": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "pyvips": pyvips.__version__,
        "thumbor": version([str(thumbor), "-c", "import thumbor; print(thumbor.__version__)"])
        if thumbor.exists() else "not installed",
        "pillow_in_thumbor_venv": version([str(thumbor), "-c", "import PIL; print(PIL.__version__)"])
        if thumbor.exists() else "not installed",
        "nats_server": version(["nats-server", "--version"]),
        "redis_server": version(["redis-server", "--version"], r"v=(\d+\.\d+\.\d+)"),
        "node": version(["node", "--version"]),
        "loadtest": LOADTEST_VERSION,
    }


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (KiB) of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# --- inputs -----------------------------------------------------------------------------


@dataclass
class Inputs:
    files: dict[str, Path] = field(default_factory=dict)
    """name -> file, e.g. photo.jpg, gainmap.png, photo-29mp.jpg"""
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def group(self, kind: str) -> list[str]:
        return [name for name in self.files if kind_of(name) == kind]


def kind_of(name: str) -> str:
    stem, ext = name.rsplit(".", 1)
    return ("large-" if "mp" in stem.split("-")[-1] else "") + ext


UPSCALE = {"photo": 2.2, "gainmap": 1.8}
"""6 MP x 2.2^2 = 29 MP (5995x4895); 8 MP x 1.8^2 = 27 MP (6912x3888): inside MAX_INPUT_PIXELS (50 MP)."""


def prepare_inputs() -> Inputs:
    """The two real photos as JPEG (as shipped), PNG and WebP, plus 27-29 MP JPEG upscales."""
    import pyvips
    out = WORK / "inputs"
    out.mkdir(parents=True, exist_ok=True)
    inputs = Inputs()
    for name, file in PHOTOS.items():
        source = CORPUS / file
        if not source.exists():
            raise SystemExit(f"bench: corpus image {source} is missing (set PIXQ_CORPUS_DIR)")
        jpg = out / f"{name}.jpg"
        if not jpg.exists():
            shutil.copyfile(source, jpg)
        image = pyvips.Image.new_from_file(str(source))
        for ext, opts in (("png", {"compression": 6}), ("webp", {"Q": 90})):
            target = out / f"{name}.{ext}"
            if not target.exists():
                image.write_to_file(str(target) + ".part." + ext, **opts)
                os.replace(str(target) + ".part." + ext, target)
        big = image.resize(UPSCALE[name], kernel="lanczos3")
        mp = round(big.width * big.height / 1e6)
        large = out / f"{name}-{mp}mp.jpg"
        if not large.exists():
            big.write_to_file(str(large) + ".part.jpg", Q=90)
            os.replace(str(large) + ".part.jpg", large)
        for path in (jpg, out / f"{name}.png", out / f"{name}.webp", large):
            inputs.files[path.name] = path
            header = pyvips.Image.new_from_file(str(path))
            inputs.sizes[path.name] = (header.width, header.height)
    return inputs


# --- workloads: one job description, run both by the raw loop and by the stack -----------


@dataclass(frozen=True)
class Workload:
    name: str
    endpoint: str          # "resize" or "crop"
    inputs: tuple[str, ...]
    fmt: str = "jpeg"

    def params(self, inputs: Inputs, name: str) -> dict:
        if self.endpoint == "crop":
            width, height = inputs.sizes[name]
            side = min(1024, width, height)
            return {"x": (width - side) // 2, "y": (height - side) // 2, "width": side, "height": side,
                    "format": self.fmt, "quality": 80}
        return {"width": 512, "height": 512, "format": self.fmt, "quality": 80}


# --- the local stack ---------------------------------------------------------------------


class LocalStack:
    """pixq.devstack.Stack in a fresh root with its own ports and quiet logs."""

    def __init__(self, name: str, workers: int, worker_concurrency: int = 2, vips_concurrency: int = 1,
                 extra_env: dict[str, str] | None = None) -> None:
        from pixq.devstack import Stack
        self.root = WORK / "stacks" / name
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.api_port = free_port()
        self.env_overrides = {
            "LOG_LEVEL": "warning", "WORKER_CONCURRENCY": str(worker_concurrency),
            "VIPS_CONCURRENCY": str(vips_concurrency), "PIXQ_DEV_NATS_PORT": str(free_port()),
            "PIXQ_DEV_REDIS_PORT": str(free_port()),
            # The bench drives one tenant from one IP far past any sane client's rate: it measures
            # the pipeline, not the limiter (docs/api.md gives the limiter's Redis cost).
            "RATE_LIMIT": "off", "RATE_LIMIT_PER_IP": "off",
            # Every section resubmits the same few photos with the same spec: with reuse on
            # (worker.reuse, REUSE_OUTPUTS, on by default) all but the first job of each would
            # complete from stored outputs without processing, and "throughput" or "latency"
            # would time copies. So processing is measured, and the reuse lookup a miss costs
            # in production (a BLAKE3 hash of the input, 0.17 ms per MB, and a Redis GET; a
            # SET after the job) is not in these figures: docs/operations.md, "Work done once".
            "REUSE_OUTPUTS": "false", **(extra_env or {}),
        }
        self.stack = Stack(self.root, workers, self.api_port)
        self.worker_concurrency = worker_concurrency
        self.vips_concurrency = vips_concurrency
        self.env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def pid(self, name: str) -> int:
        return next(proc.pid for child, proc in self.stack.children if child == name)

    def worker_pids(self) -> list[int]:
        return [proc.pid for child, proc in self.stack.children if child.startswith("worker-")]

    def metrics_ports(self) -> list[int]:
        ports = []
        for pid in self.worker_pids():
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            ports += [int(item.split(b"=", 1)[1]) for item in environ if item.startswith(b"METRICS_PORT=")]
        return ports

    def __enter__(self) -> "LocalStack":
        saved = {key: os.environ.get(key) for key in self.env_overrides}
        os.environ.update(self.env_overrides)
        try:
            self.env = self.stack.start()
        except BaseException:
            self.stack.stop()
            raise
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if self.worker_pids():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(_listening(p) for p in self.metrics_ports()):
                time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.stack.stop()

    def put(self, key: str, path: Path) -> str:
        target = self.storage / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return key

    def pin_workers(self, cpus: list[int]) -> None:
        """Pin every thread of worker i to cpus[i] (a pod with a 1-CPU limit, roughly)."""
        for pid, cpu in zip(self.worker_pids(), cpus):
            pin_process(pid, {cpu})

    def pin_services(self, cpus: set[int]) -> None:
        """Pin the API, nats-server and redis-server (every thread) to ``cpus``."""
        for name, proc in self.stack.children:
            if not name.startswith("worker-"):
                pin_process(proc.pid, cpus)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


_JOBS_LINE = re.compile(r'^pixq_worker_jobs_total\{([^}]*)\}\s+([0-9.e+]+)', re.M)


async def finished_jobs(session, ports: list[int]) -> tuple[int, int]:
    """(completed, failed) summed over the workers' Prometheus counters."""
    completed = failed = 0
    for port in ports:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        for labels, value in _JOBS_LINE.findall(text):
            if 'outcome="completed"' in labels:
                completed += int(float(value))
            elif 'outcome="failed"' in labels or 'outcome="dead_lettered"' in labels:
                failed += int(float(value))
    return completed, failed


def dump_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def run_async(coro):
    return asyncio.run(coro)
