"""Worker plumbing per job: worker CPU per job against `worker.imaging.process` alone (issue 16, item 2).

Runs a local stack (bench.common.LocalStack: one worker, default WORKER_CONCURRENCY, one libvips
thread), submits JSON storage_key resize jobs of sharp's two photos (fit 512x512 JPEG Q80), and
reads every process's CPU time (user + system, /proc/<pid>/stat) before and after: CPU time
stays meaningful on a busy machine, where wall-clock throughput would be noise. Then it runs
``worker.imaging.process_job`` alone on the same bytes and spec, in this process, with the
worker's libvips settings, and prints JSON:

    {"worker_cpu_ms_per_job", "engine_cpu_ms_per_job", "overhead_ms",
     "nats_cpu_ms_per_job", "redis_cpu_ms_per_job", "api_cpu_ms_per_job", ...}

``overhead_ms`` (worker minus engine, the median over the runs of each run's worker CPU less
its engine rounds, interleaved with the stack's jobs in slices of about a second: see
``interleaved``) is what the issue bounds at 2 ms. ``loop_thread_cpu_ms_per_job`` (the worker's event-loop thread,
read in the same runs) carries none: a lower bound of the overhead. Usage:

    python -m bench.plumbing [--jobs 300] [--repeats 3] [--profile out.txt]

``--profile`` also records the worker with py-spy (raw collapsed stacks) during one more run and
prints the top frames by self time, libvips' own threads and the pipeline left out.
Not part of bench/run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import CORPUS, PHOTOS, LocalStack, ensure_py_spy, log, run_async
from bench.driver import run_jobs, stage_inputs, stat_cpu

PARAMS = {"width": 512, "height": 512, "format": "jpeg", "quality": 80}


INPUTS: dict[str, Path] = {f"{name}.jpg": CORPUS / file for name, file in PHOTOS.items()}
"""What the jobs resize: sharp's two photos, or the files given with --inputs."""


def _inputs() -> dict[str, Path]:
    return INPUTS


def _jobs(count: int) -> list[tuple[str, str, dict]]:
    names = list(_inputs())
    return [("resize", names[i % len(names)], PARAMS) for i in range(count)]


class EngineLoop:
    """``process_job`` alone on the same inputs and spec, with the worker's libvips setup, in this
    process: one round per stack run, taken right after it, so each pair sees the same machine
    speed (a shared VM's drifts by more than the plumbing costs: a 10 % drift of a 42 ms engine is
    4 ms)."""

    def __init__(self) -> None:
        from pixq.jobs import JobType
        from pixq.limits import Limits
        from pixq.settings import load_settings
        from pixq.spec import to_pipeline
        from worker.imaging import process_job
        from worker.imaging.vips_setup import configure_vips

        self.process_job = process_job
        settings = load_settings()
        configure_vips(1, settings.vips_cache_max_ops)
        self.limits = Limits.from_settings(settings)
        self.spec = to_pipeline(JobType.RESIZE, dict(PARAMS))
        self.datas = [path.read_bytes() for path in _inputs().values()]
        for data in self.datas:  # warm-up
            self.process_job(data, self.spec, self.limits)

    def round(self, count: int) -> dict[str, float]:
        """CPU ms per job over ``count`` jobs: ``user``, ``system`` (the whole process), and split
        by thread: ``calling_thread`` (this one: pyvips' Python and libvips' work on the caller)
        and ``libvips_threads`` (libvips' own pool)."""
        pid = os.getpid()
        started, threads_before = os.times(), thread_groups(pid)
        for i in range(count):
            self.process_job(self.datas[i % len(self.datas)], self.spec, self.limits)
        ended, threads_after = os.times(), thread_groups(pid)
        return {"user": (ended.user - started.user) * 1000 / count,
                "system": (ended.system - started.system) * 1000 / count,
                "calling_thread": (threads_after["main"] - threads_before["main"]) * 1000 / count,
                "libvips_threads": (threads_after["libvips"] - threads_before["libvips"]) * 1000 / count}


def thread_groups(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of process ``pid``'s threads, in groups: ``main`` (its id is
    the pid), ``libvips`` (libvips' own pool: the OS names them "libvips worker"), ``python``
    (every other thread, Python's threads keep the process's name). Threads that ended are gone
    from /proc: compare groups of long-lived threads only (the worker's pools are)."""
    groups = {"main": 0.0, "libvips": 0.0, "python": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        seconds = sum(stat_cpu(text))
        group = "main" if task.name == str(pid) else "libvips" if name.startswith("libvips") else "python"
        groups[group] += seconds
    return groups


def _user_system(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``."""
    return stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def stack_cpu(stack: LocalStack, keys: dict[str, str], count: int) -> dict:
    """CPU ms per job by process (bench.driver.cpu_per_job), plus the worker's user / system split
    (system time includes loopback TCP: a send on loopback runs the receive path too), its
    event-loop thread's CPU (``worker_loop_thread``), its Python pool threads'
    (``worker_python_threads``: the engine's calls, storage reads and writes) and libvips' own
    threads' (``worker_libvips_threads``).

    The loop thread (the main thread: its id is the pid) runs every step of a job but the
    engine and the storage and sniff calls the worker hands to threads: a lower bound of the
    plumbing, measured in the same run as the rest, so the machine's drift cannot land on it
    as it lands on the difference against an engine round taken afterwards."""
    pid = stack.worker_pids()[0]
    before, threads_before = _user_system(pid), thread_groups(pid)
    result = run_async(run_jobs(stack, _jobs(count), keys))
    after, threads_after = _user_system(pid), thread_groups(pid)
    if result["statuses"] != {"completed": count}:
        raise SystemExit(f"bench.plumbing: not every job completed: {result['statuses']}")
    return {**result["cpu_ms_per_job"], "worker_user": round((after[0] - before[0]) * 1000 / count, 2),
            "worker_system": round((after[1] - before[1]) * 1000 / count, 2),
            **{f"worker_{name}_threads" if name != "main" else "worker_loop_thread":
               round((threads_after[name] - threads_before[name]) * 1000 / count, 2) for name in threads_after}}


def interleaved(stack: LocalStack, keys: dict[str, str], engine: "EngineLoop", jobs: int,
                slices: int) -> tuple[dict, dict[str, float]]:
    """One run: ``jobs`` stack jobs in ``slices`` slices, each followed by an engine round of
    half as many jobs (the stack idles meanwhile). The machine's speed drifts by several
    per cent within seconds on this VM; slices of about a second put the same drift on both
    sides, where one stack run then one engine round (until 2026-12-01) put 2 to 7 ms of it on
    their difference. Returns stack_cpu's figures and EngineLoop.round's, per job, averaged
    over the slices (equal counts, so the mean is the per-job figure)."""
    size = max(1, jobs // slices)
    stack_parts: list[dict] = []
    engine_parts: list[dict[str, float]] = []
    for _ in range(slices):
        stack_parts.append(stack_cpu(stack, keys, size))
        engine_parts.append(engine.round(max(5, size // 2)))
    run = {name: round(statistics.fmean(part[name] for part in stack_parts), 2) for name in stack_parts[0]}
    engine_run = {name: statistics.fmean(part[name] for part in engine_parts) for name in engine_parts[0]}
    return run, engine_run


def profile(stack: LocalStack, keys: dict[str, str], count: int, out: Path) -> list[list]:
    """py-spy on the worker during ``count`` jobs; top frames by self time outside libvips.

    ``--gil``: only the thread holding the GIL is sampled, so the samples are Python CPU time;
    without it py-spy also counts a thread waiting for the GIL or in a socket call as busy."""
    py_spy = ensure_py_spy()
    if py_spy is None:
        return []
    proc = subprocess.Popen([str(py_spy), "record", "--pid", str(stack.worker_pids()[0]), "--rate", "250", "--gil",
                             "--format", "raw", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    stack_cpu(stack, keys, count)
    proc.send_signal(2)
    proc.wait(timeout=60)
    return top_frames(out)


def top_frames(path: Path, top: int = 20) -> list[list]:
    """Self-time frames of the worker's Python threads, excluding the libvips pipeline thread's
    work and idle waits (selector poll): what the plumbing spends."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or not stack.strip():
            continue
        frames = stack.split(";")
        if any("worker/imaging" in f or "pyvips" in f for f in frames):
            continue
        if frames[-1].startswith(("select (", "poll (", "_worker (concurrent", "wait (threading")):
            continue
        samples = int(n)
        total += samples
        leaf = frames[-1].rsplit(":", 1)[0] + ")" if ":" in frames[-1] else frames[-1]
        counts[leaf] = counts.get(leaf, 0) + samples
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
    return [[frame, n, round(100 * n / max(total, 1), 1)] for frame, n in ranked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--slices", type=int, default=10,
                        help="each run alternates this many slices of stack jobs with engine rounds")
    parser.add_argument("--inputs", type=Path, nargs="+", default=None,
                        help="JPEG files instead of the two photos (a small one makes the engine's share, "
                             "and its noise, small: what is left is the plumbing)")
    args = parser.parse_args()
    if args.inputs:
        INPUTS.clear()
        INPUTS.update({f"{index}-{path.name}": path for index, path in enumerate(args.inputs)})

    runs: list[dict] = []
    frames: list[list] = []
    stdout = os.dup(1)
    os.dup2(2, 1)  # the stack's processes log to the stdout they inherit: keep ours for the JSON
    # REUSE_OUTPUTS off: the same two inputs again and again would otherwise complete from the
    # first jobs' outputs (worker.reuse) and no job would run the pipeline.
    engines: list[dict[str, float]] = []
    with LocalStack("plumbing", workers=1, extra_env={"REUSE_OUTPUTS": "false"}) as stack:
        keys = stage_inputs(stack, _inputs())
        engine = EngineLoop()
        stack_cpu(stack, keys, 20)  # warm-up: connections, imports, libvips caches
        for _ in range(args.repeats):
            run, engine_run = interleaved(stack, keys, engine, args.jobs, args.slices)
            runs.append(run)
            engines.append(engine_run)
            log(f"stack run: {runs[-1]}; engine alone, interleaved: {engine_run}")
        if args.profile is not None:
            frames = profile(stack, keys, args.jobs, args.profile)
    os.dup2(stdout, 1)

    def med(name: str) -> float:
        return round(statistics.median(run.get(name, 0.0) for run in runs), 2)

    overheads = [round(run["workers"] - engine_run["user"] - engine_run["system"], 2)
                 for run, engine_run in zip(runs, engines)]
    engine = sorted(engines, key=lambda engine_run: engine_run["user"] + engine_run["system"])[len(engines) // 2]
    engine_user, engine_system = engine["user"], engine["system"]
    out = {"jobs": args.jobs, "repeats": args.repeats, "slices": args.slices, "worker_cpu_ms_per_job": med("workers"),
           "engine_cpu_ms_per_job": round(engine_user + engine_system, 2),
           "overhead_ms": round(statistics.median(overheads), 2), "overhead_runs": overheads,
           "nats_cpu_ms_per_job": med("nats"), "redis_cpu_ms_per_job": med("redis"),
           "api_cpu_ms_per_job": med("api"), "worker_user_ms_per_job": med("worker_user"),
           "worker_system_ms_per_job": med("worker_system"),
           "loop_thread_cpu_ms_per_job": med("worker_loop_thread"),
           "engine_user_ms_per_job": round(engine_user, 2), "engine_system_ms_per_job": round(engine_system, 2),
           "worker_pool_threads_ms_per_job": med("worker_python_threads"),
           "worker_libvips_threads_ms_per_job": med("worker_libvips_threads"),
           "engine_calling_thread_ms_per_job": round(statistics.median(e["calling_thread"] for e in engines), 2),
           "engine_libvips_threads_ms_per_job": round(statistics.median(e["libvips_threads"] for e in engines), 2),
           "runs": runs}
    if frames:
        out["worker_top_self_frames"] = frames
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
