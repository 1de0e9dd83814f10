"""Peak memory: a worker on 27-29 MP JPEGs at WORKER_CONCURRENCY 1, 2, 4; the API streaming uploads."""

from __future__ import annotations

import asyncio

import aiohttp

from bench.common import WORK, Inputs, LocalStack, log, proc_status, run_async
from bench.driver import run_jobs, stage_inputs

CONCURRENCIES = (1, 2, 4)


WORKLOADS = ("fit512", "mixed")


def large_jobs(inputs: Inputs, count: int, workload: str = "mixed") -> list[tuple[str, str, dict]]:
    """``fit512``: the throughput workload (fit in 512x512 JPEG, shrink-on-load) on 27-29 MP
    JPEGs. ``mixed`` cycles: fit 512 JPEG, 2048x2048 centre crop JPEG (full-size sequential
    decode), fit 2048 WebP (shrink-on-load to 1/2, then a real resize and a bigger encode)."""
    names = inputs.group("large-jpg")
    jobs = []
    for i in range(count):
        name = names[i % len(names)]
        width, height = inputs.sizes[name]
        kind = 0 if workload == "fit512" else (i // len(names)) % 3
        if kind == 0:
            jobs.append(("resize", name, {"width": 512, "height": 512, "format": "jpeg", "quality": 80}))
        elif kind == 1:
            jobs.append(("crop", name, {"x": (width - 2048) // 2, "y": (height - 2048) // 2, "width": 2048,
                                        "height": 2048, "format": "jpeg", "quality": 80}))
        else:
            jobs.append(("resize", name, {"width": 2048, "height": 2048, "format": "webp", "quality": 80}))
    return jobs


GLIBC_DEFAULTS = {"MALLOC_ARENA_MAX": "16", "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
"""glibc's own behaviour on 2 cores: 8 arenas a core, and the mmap threshold free to climb to
its 32 MiB ceiling (the environment overrides worker.memory's settings)."""


def measure_worker_memory(inputs: Inputs, jobs_per_slot: int = 6) -> dict:
    """Peak RSS per workload and WORKER_CONCURRENCY. The worker caps glibc malloc arenas at 2 and
    fixes the mmap threshold at 128 KiB (worker/memory.py); the last row runs concurrency 4
    with glibc's defaults (GLIBC_DEFAULTS in the environment overrides both) to show what
    that saves. REUSE_OUTPUTS is off: the same inputs and specs again would otherwise complete
    from the first job's outputs, without decoding anything."""
    out = {}
    runs = [(w, c, {}) for w in WORKLOADS for c in CONCURRENCIES] + [("mixed", 4, GLIBC_DEFAULTS)]
    for workload, concurrency, env in runs:
        label = f"{workload}@{concurrency}" + ("+glibc-defaults" if env else "")
        with LocalStack(f"mem-c{concurrency}", workers=1, worker_concurrency=concurrency,
                        extra_env={"REUSE_OUTPUTS": "false", **env}) as stack:
            keys = stage_inputs(stack, {name: inputs.files[name] for name in inputs.group("large-jpg")})
            pid = stack.worker_pids()[0]
            idle = proc_status(pid)
            result = run_async(run_jobs(stack, large_jobs(inputs, jobs_per_slot * concurrency * 3, workload), keys))
            after = proc_status(pid)
            out[label] = {"idle_rss_mib": round(idle["VmRSS"] / 1024, 1),
                                     "peak_rss_mib": round(after["VmHWM"] / 1024, 1),
                                     "rss_after_mib": round(after["VmRSS"] / 1024, 1),
                                     "jobs": result["jobs"], "statuses": result["statuses"],
                                     "jobs_per_s": result["jobs_per_s"]}
            log(f"worker memory {label}: peak {out[label]['peak_rss_mib']} MiB "
                f"{result['statuses']}")
    return out


def padded_jpeg(source: bytes, size: int, path) -> None:
    """A valid JPEG padded after its end marker to exactly ``size`` bytes (the API sniffs the header)."""
    if not path.exists() or path.stat().st_size != size:
        path.write_bytes(source + b"\0" * (size - len(source)))


async def _upload(session: aiohttp.ClientSession, url: str, path) -> int:
    with open(path, "rb") as handle:
        form = aiohttp.FormData()
        form.add_field("file", handle, filename=path.name, content_type="image/jpeg")
        form.add_field("width", "512")
        async with session.post(f"{url}/api/v1/resize", data=form) as response:
            await response.read()
            return response.status


def measure_api_memory(photo) -> dict:
    """API RSS after 1 MiB uploads, then after 50 MiB uploads (one at a time, then 4 at once)."""
    small, big = WORK / "upload-1mib.jpg", WORK / "upload-50mib.jpg"
    data = photo.read_bytes()
    padded_jpeg(data, 1 << 20, small)
    padded_jpeg(data, 50 << 20, big)
    out = {"workers": "none running", "phases": []}
    with LocalStack("api-mem", workers=0) as stack:
        pid = stack.pid("api")
        out["idle"] = {key: round(value / 1024, 1) for key, value in proc_status(pid).items()}

        async def phase(path, count: int, parallel: int) -> list[int]:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
                statuses = []
                for _ in range(count // parallel):
                    statuses += await asyncio.gather(*(_upload(session, stack.url, path) for _ in range(parallel)))
                return statuses

        for label, path, count, parallel in (("1 MiB x 8, one at a time", small, 8, 1),
                                             ("50 MiB x 4, one at a time", big, 4, 1),
                                             ("50 MiB x 8, 4 at once", big, 8, 4)):
            statuses = run_async(phase(path, count, parallel))
            status = proc_status(pid)
            out["phases"].append({"phase": label, "http_statuses": sorted(set(statuses)),
                                  "rss_mib": round(status["VmRSS"] / 1024, 1), "peak_rss_mib": round(status["VmHWM"] / 1024, 1)})
            log(f"api memory after {label}: rss {status['VmRSS'] // 1024} MiB peak {status['VmHWM'] // 1024} MiB "
                f"statuses {sorted(set(statuses))}")
    return out
