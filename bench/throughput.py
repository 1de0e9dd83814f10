"""Throughput: the raw pyvips loop vs the whole local stack, same jobs, same P processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import WORK, Inputs, LocalStack, Workload, log, median, run_async
from bench.driver import run_jobs, stage_inputs
from bench.raw import RawPool

WORKLOADS = [
    Workload("resize-jpeg", "resize", ("photo.jpg", "gainmap.jpg")),
    Workload("resize-png", "resize", ("photo.png", "gainmap.png")),
    Workload("resize-webp", "resize", ("photo.webp", "gainmap.webp")),
    Workload("resize-large-jpeg", "resize", ("large",)),
    Workload("crop-jpeg", "crop", ("photo.jpg", "gainmap.jpg")),
    Workload("resize-to-webp", "resize", ("photo.jpg", "gainmap.jpg"), fmt="webp"),
    Workload("resize-to-avif", "resize", ("photo.jpg", "gainmap.jpg"), fmt="avif"),
]
DESCRIPTIONS = {
    "resize-jpeg": "JPEG photos (6 + 8 MP) -> fit 512x512 JPEG Q80",
    "resize-png": "same photos as PNG -> fit 512x512 JPEG Q80",
    "resize-webp": "same photos as WebP -> fit 512x512 JPEG Q80",
    "resize-large-jpeg": "27 + 29 MP JPEG upscales -> fit 512x512 JPEG Q80",
    "crop-jpeg": "JPEG photos -> 1024x1024 centre box (x,y,w,h) JPEG Q80",
    "resize-to-webp": "JPEG photos -> fit 512x512 WebP Q80",
    "resize-to-avif": "JPEG photos -> fit 512x512 AVIF Q80",
}


def input_names(workload: Workload, inputs: Inputs) -> list[str]:
    if workload.inputs == ("large",):
        return inputs.group("large-jpg")
    return list(workload.inputs)


def job_list(workload: Workload, inputs: Inputs, count: int) -> list[tuple[str, str, dict]]:
    names = input_names(workload, inputs)
    return [(workload.endpoint, names[i % len(names)], workload.params(inputs, names[i % len(names)]))
            for i in range(count)]


def measure_paired(stack: LocalStack, workloads: list[Workload], inputs: Inputs, processes: int,
                   repeats: int, seconds: float, uploads_for: tuple[str, ...] = (),
                   alongside: dict[str, Callable[[int], dict]] | None = None) -> tuple[dict, dict]:
    """jobs/s per workload, raw (P pyvips processes) and through the stack, in alternating runs.

    Each repeat runs raw then stack on the same job list, so a change in a shared machine's
    speed during the run lands on both sides of every ratio instead of on one block. The raw
    pool and the stack are both started first; an idle one costs no CPU (blocked on a queue or
    a 1 s fetch). Also picks each workload's job count from a raw probe (about ``seconds`` of
    work). Multipart-upload stack runs ('<name>-upload') follow, for the workloads named in
    ``uploads_for``, paired with fresh raw runs of the same workload. ``alongside``: per
    workload name, a third side (thumbor: bench.thumbor.paired_runners) run with the same job
    count after each storage_key stack run, after one warm-up; its runs land in that workload's
    ``alongside_runs``."""
    raw_out: dict = {}
    stack_out: dict = {}
    keys = stage_inputs(stack, inputs.files)
    upload_data = {name: path.read_bytes() for name, path in inputs.files.items()}
    files = {name: str(path) for name, path in inputs.files.items()}
    warm = stack.stack.workers * stack.worker_concurrency * 3
    with RawPool(processes, files) as pool:
        for workload in workloads:
            pool.measure(job_list(workload, inputs, processes * 2))  # warm-up
            probe = pool.measure(job_list(workload, inputs, processes * 4))
            count = max(4 * processes, min(1200, int(probe * seconds) // 2 * 2))
            jobs = job_list(workload, inputs, count)
            for upload in [False] + ([True] if workload.name in uploads_for else []):
                uploads = upload_data if upload else None
                run_async(run_jobs(stack, job_list(workload, inputs, warm), keys, uploads))  # warm-up
                third = None if upload or alongside is None else alongside.get(workload.name)
                if third is not None:
                    third(warm)  # warm-up
                raw_runs, stack_runs, third_runs = [], [], []
                for _ in range(repeats):
                    raw_runs.append(round(pool.measure(jobs), 2))
                    stack_runs.append(run_async(run_jobs(stack, jobs, keys, uploads)))
                    if third is not None:
                        third_runs.append(third(count))
                label = workload.name + ("-upload" if upload else "")
                if not upload:
                    raw_out[workload.name] = {"jobs": count, "runs": raw_runs, "jobs_per_s": median(raw_runs)}
                rates = [r["jobs_per_s"] for r in stack_runs]
                stack_out[label] = {"jobs": count, "runs": rates, "jobs_per_s": median(rates),
                                    "paired_raw_runs": raw_runs, "paired_raw_jobs_per_s": median(raw_runs),
                                    "submit": "multipart upload" if upload else "JSON storage_key",
                                    "statuses": _merge([r["statuses"] for r in stack_runs]),
                                    "cpu_ms_per_job": stack_runs[len(stack_runs) // 2]["cpu_ms_per_job"]}
                if third_runs:
                    stack_out[label]["alongside_runs"] = third_runs
                log(f"{label}: raw {median(raw_runs)} / stack {median(rates)} jobs/s "
                    f"({count} jobs x {repeats}, alternating) {stack_out[label]['statuses']}")
            if workload.name == "resize-jpeg":
                for mode in ("naive", "libvips-default", "engine"):
                    pool.measure(job_list(workload, inputs, processes * 2), mode=mode)
                    extra = [round(pool.measure(jobs, mode=mode), 2) for _ in range(repeats)]
                    raw_out[f"resize-jpeg-{mode}"] = {"jobs": count, "runs": extra, "jobs_per_s": median(extra)}
    return raw_out, stack_out


def _merge(items: list[dict]) -> dict:
    merged: dict[str, int] = {}
    for item in items:
        for key, value in item.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def profile_stack(stack: LocalStack, inputs: Inputs, py_spy: Path, count: int, label: str,
                  workload: Workload = WORKLOADS[0]) -> dict:
    """py-spy on worker 1 and on the API while the stack runs ``count`` jobs (not a timed run)."""
    keys = stage_inputs(stack, inputs.files)
    outdir = WORK / "profiles"
    outdir.mkdir(parents=True, exist_ok=True)
    targets = {"worker": stack.worker_pids()[0], "api": stack.pid("api")}
    recorders = {}
    for name, pid in targets.items():
        raw = outdir / f"{label}-{name}.txt"
        recorders[name] = (raw, subprocess.Popen(
            [str(py_spy), "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--nonblocking",
             "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    time.sleep(1.0)
    result = run_async(run_jobs(stack, job_list(workload, inputs, count), keys))
    summaries = {"run": result}
    for name, (raw, proc) in recorders.items():
        proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        summaries[name] = summarise_profile(raw) if raw.exists() else {"error": proc.stderr.read()[-500:]}
    return summaries


def summarise_profile(path: Path, top: int = 12) -> dict:
    """From py-spy's collapsed stacks: top frames by self time and by inclusive time."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        # A thread with no Python frame at all is one of libvips' own worker threads computing
        # pixels (the Python thread that started the operation waits in Operation.call).
        frames = [_short(frame) for frame in stack.split(";")] if stack.strip() else [NATIVE]
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + samples
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + samples

    def table(counts: dict[str, int]) -> list[list]:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [[frame, round(100 * n / max(total, 1), 1)] for frame, n in ranked]

    return {"samples": total, "self": table(self_counts), "inclusive": table(incl_counts)}


NATIVE = "[libvips worker thread: native code, no Python frame]"


def _short(frame: str) -> str:
    """'write_to_buffer (pyvips/vimage.py:123)' -> 'write_to_buffer (pyvips/vimage.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{name} ({file})" if file else name
