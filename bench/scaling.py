"""Scaling: the same JPEG resize jobs with 1 and 2 worker processes, each pinned to its own core."""

from __future__ import annotations

from bench.common import Inputs, LocalStack, log, median, run_async
from bench.driver import run_jobs, stage_inputs
from bench.throughput import WORKLOADS, job_list


def measure_scaling(inputs: Inputs, worker_concurrency: int, count: int, repeats: int) -> dict:
    """Each worker process is pinned to one core (like a pod with a 1-CPU limit); the API,
    NATS, Redis and the driver are not pinned and share both cores."""
    workload = WORKLOADS[0]
    out = {"workload": "resize-jpeg", "worker_concurrency": worker_concurrency, "pinned": True}
    for workers in (1, 2):
        with LocalStack(f"scale-{workers}", workers=workers, worker_concurrency=worker_concurrency) as stack:
            stack.pin_workers(list(range(workers)))
            keys = stage_inputs(stack, inputs.files)
            jobs = count * workers // 2
            run_async(run_jobs(stack, job_list(workload, inputs, 4 * workers), keys))
            runs = [run_async(run_jobs(stack, job_list(workload, inputs, jobs), keys)) for _ in range(repeats)]
            rates = [r["jobs_per_s"] for r in runs]
            out[str(workers)] = {"jobs": jobs, "runs": rates, "jobs_per_s": median(rates),
                                 "cpu_ms_per_job": runs[len(runs) // 2]["cpu_ms_per_job"]}
            log(f"scaling {workers} worker(s): {out[str(workers)]['jobs_per_s']} jobs/s")
    out["ratio_2_over_1"] = round(out["2"]["jobs_per_s"] / out["1"]["jobs_per_s"], 2)
    return out
