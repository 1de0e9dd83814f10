"""Scaling (issue 16, item 5): one worker process on one core against two, each on its own core.

Both runs give the stack what it has cores for, and every process is pinned
(``sched_setaffinity`` on every thread, bench.common.pin_process):

* **1 worker:** the worker, the API, nats-server, redis-server and this driver all on core 0:
  one core does the whole job, the way one worker's share of a cluster does.
* **2 workers:** worker 1 on core 0, worker 2 on core 1; the API, NATS, Redis and the driver
  may run on either core (they are the same processes as before, now with twice the jobs to
  carry, and the scheduler puts them where a worker waits on I/O).

So the ratio is "two cores against one" for the whole stack. Leaving the services free in
the 1-worker run would hand it the idle second core for its plumbing, and the ratio would
measure that gift instead (2 / (1 + plumbing share) at best). The ratio needs ≥ 3 cores for
a service core of its own; on 2 cores this is the layout that disturbs the workers least
and treats both runs alike.
"""

from __future__ import annotations

import os

from bench.common import Inputs, LocalStack, log, median, pin_process, run_async
from bench.driver import run_jobs, stage_inputs
from bench.throughput import WORKLOADS, job_list


def _pin_self(cpus: set[int]) -> set[int]:
    """Pin every thread of this process (the load driver); return the previous mask."""
    previous = os.sched_getaffinity(0)
    pin_process(os.getpid(), cpus)
    return previous


def measure_scaling(inputs: Inputs, worker_concurrency: int, count: int, repeats: int) -> dict:
    workload = WORKLOADS[0]
    cores = os.cpu_count() or 1
    out = {"workload": "resize-jpeg", "worker_concurrency": worker_concurrency, "pinned": True, "cores": cores,
           "layout": {"1": "worker, API, NATS, Redis and driver all on core 0",
                      "2": "worker 1 on core 0, worker 2 on core 1; API, NATS, Redis and driver on cores 0-1"}}
    if cores < 2:
        raise SystemExit("bench scaling: needs at least 2 cores")
    for workers in (1, 2):
        everything = {0} if workers == 1 else {0, 1}
        previous = _pin_self(everything)
        try:
            with LocalStack(f"scale-{workers}", workers=workers, worker_concurrency=worker_concurrency) as stack:
                stack.pin_workers(list(range(workers)))
                stack.pin_services(everything)
                keys = stage_inputs(stack, inputs.files)
                jobs = count * workers // 2
                run_async(run_jobs(stack, job_list(workload, inputs, 4 * workers), keys))
                runs = [run_async(run_jobs(stack, job_list(workload, inputs, jobs), keys)) for _ in range(repeats)]
        finally:
            pin_process(os.getpid(), previous)
        rates = [r["jobs_per_s"] for r in runs]
        out[str(workers)] = {"jobs": jobs, "runs": rates, "jobs_per_s": median(rates),
                             "cpu_ms_per_job": runs[len(runs) // 2]["cpu_ms_per_job"],
                             "statuses": runs[-1]["statuses"]}
        log(f"scaling {workers} worker(s): {out[str(workers)]['jobs_per_s']} jobs/s {runs[-1]['statuses']}")
    out["ratio_2_over_1"] = round(out["2"]["jobs_per_s"] / out["1"]["jobs_per_s"], 2)
    return out
