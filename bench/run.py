"""pixq benchmark suite: `make bench` (or `.venv/bin/python -m bench.run`).

    python -m bench.run                      # everything, ~10-15 min on 2 cores
    python -m bench.run --quick              # smoke run: one repeat, short runs (~3 min)
    python -m bench.run --only api,memory    # some sections: throughput,thumbor,api,memory,scaling,latency,
                                             #   notifications,inputs,fairness,engine_sharp,plumbing,api_cpu

Writes bench/results/<section>.json and regenerates docs/benchmarks.md from every result
file present (a partial run keeps the other sections' last figures). A --quick run writes
bench/.work/quick/results/ and bench/.work/quick/benchmarks.md instead, so a smoke test
never replaces the committed figures. Every section records the load average and the CPU
other processes used meanwhile (bench.common.LoadMonitor); a section run on a busy machine
is flagged BUSY MACHINE in the report. Installs what it
needs on first use: thumbor into bench/.thumbor-venv, npm's loadtest into bench/.tools,
py-spy into the venv. Everything it starts listens on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

from bench import report
from bench.common import (RESULTS, WORK, LoadMonitor, dump_json, ensure_loadtest, ensure_py_spy, ensure_thumbor,
                          load_average, log, machine_info, paired_ratio, prepare_inputs)

QUICK = WORK / "quick"
"""Where a --quick run writes its JSON and report: never over the committed figures."""


def run_module(module: str, args: list[str]) -> dict:
    """Another helper's bench script (``python -m bench.<module>``), whose stdout ends with its JSON."""
    out = subprocess.run([sys.executable, "-m", module, *args], check=True, text=True, stdout=subprocess.PIPE)
    start = out.stdout.rfind("\n{\n") + 1 if not out.stdout.startswith("{\n") else 0
    return json.loads(out.stdout[start:])


SECTIONS = ("throughput", "thumbor", "api", "memory", "scaling", "latency", "notifications", "inputs", "fairness",
            "engine_sharp", "plumbing", "api_cpu", "img")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pixq benchmarks", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat of short runs (a smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2,
                        help="P: raw processes = worker processes = thumbor processes (default: cores)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="WORKER_CONCURRENCY per worker process")
    parser.add_argument("--vips-concurrency", type=int, default=1, help="VIPS_CONCURRENCY per worker process")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    for binary in ("nats-server", "redis-server"):
        if shutil.which(binary) is None:
            raise SystemExit(f"bench: {binary} is missing (`make bench` installs it: redis with apt, nats-server into .venv)")
    if "engine_sharp" in only:
        from tests.differential.sharp_client import SharpMissing, check_installed
        try:
            check_installed()  # before the long sections, not after them
        except SharpMissing as exc:
            raise SystemExit(f"bench: {exc}") from None

    repeats = 1 if args.quick else 3
    seconds = 1.5 if args.quick else 4.0
    P = args.processes
    results = QUICK / "results" if args.quick else RESULTS
    started = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    run_info = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick, "sections": only,
                "processes": P, "worker_concurrency": args.worker_concurrency,
                "vips_concurrency": args.vips_concurrency, "repeats": repeats, "seconds_per_run": seconds,
                "load_average_start": load_average()}
    py_spy = ensure_py_spy() if "throughput" in only else None
    thumbor_exe = ensure_thumbor() if "thumbor" in only or "img" in only else None
    loadtest_module = ensure_loadtest() if "api" in only else None
    run_info["machine"] = machine_info()
    log(f"machine: {json.dumps(run_info['machine'])}; load average {run_info['load_average_start']}")
    inputs = prepare_inputs()

    def save(name: str, monitor: LoadMonitor | dict, data: dict) -> None:
        load = monitor if isinstance(monitor, dict) else monitor.figures()
        if load["busy"]:
            log(f"BUSY MACHINE during {name}: {'; '.join(load['busy_reasons'])}")
        dump_json(results / f"{name}.json", {"run": run_info, "load": load,
                                             "load_average_end": load["load_average_end"], **data})

    from bench.common import LocalStack
    from bench.throughput import WORKLOADS, measure_paired, profile_stack

    stack_figures: dict = {}
    if "throughput" in only or "thumbor" in only:
        workloads = WORKLOADS if "throughput" in only else [w for w in WORKLOADS if w.name in
                                                             ("resize-jpeg", "resize-png", "resize-webp")]
        from bench.thumbor import Thumbor, paired_runners, thumbor_figures
        with LoadMonitor() as throughput_load, contextlib.ExitStack() as servers:
            # thumbor runs alternate with the stack's (bench.thumbor.paired_runners); idle, it costs nothing.
            thumbor_server = (servers.enter_context(Thumbor(thumbor_exe, inputs, P))
                              if "thumbor" in only else None)
            with LocalStack("throughput", workers=P, worker_concurrency=args.worker_concurrency,
                            vips_concurrency=args.vips_concurrency) as stack:
                raw, stack_figures = measure_paired(
                    stack, workloads, inputs, P, repeats, seconds,
                    uploads_for=("resize-jpeg",) if "throughput" in only else (),
                    alongside=paired_runners(thumbor_server, P) if thumbor_server is not None else None)
                counts = {name: value["jobs"] for name, value in raw.items()}
                profile = None
                if py_spy is not None:
                    log("profiling worker 1 and the API with py-spy (not a timed run)")
                    profile = profile_stack(stack, inputs, py_spy, max(60, counts["resize-jpeg"] * 2), "resize-jpeg")
            if thumbor_server is not None:
                thumbor = thumbor_figures(thumbor_server, P, stack_figures)
        if "throughput" in only:
            save("throughput", throughput_load, {
                "raw": raw, "stack": stack_figures, "profile": profile,
                "config": {"processes": P, "worker_processes": P, "worker_concurrency": args.worker_concurrency,
                           "vips_concurrency": args.vips_concurrency, "vips_cache_max_ops": 0}})

    if "thumbor" in only:
        from bench.thumbor import PIXQ_WORKLOAD
        comparison = {}
        for fmt, workload in PIXQ_WORKLOAD.items():
            ours = stack_figures[workload]["jobs_per_s"]
            # Runs of one index were taken in a row (raw, pixq, thumbor): ratios are of pairs.
            pixq_runs, raw_runs = stack_figures[workload]["runs"], stack_figures[workload]["paired_raw_runs"]
            thumbor_runs = thumbor[fmt]["runs"]
            comparison[fmt] = {"pixq_stack_jobs_per_s": ours,
                               "raw_pyvips_jobs_per_s": stack_figures[workload]["paired_raw_jobs_per_s"],
                               "thumbor_rps": thumbor[fmt]["rps"], "pixq_runs": pixq_runs, "raw_runs": raw_runs,
                               "thumbor_runs": thumbor_runs, "ratio": paired_ratio(pixq_runs, thumbor_runs)}
        save("thumbor", throughput_load, {"thumbor": thumbor, "comparison": comparison})

    if "api" in only:
        from bench.api_load import measure_api
        with LoadMonitor() as load:
            api = measure_api(loadtest_module, inputs.files["photo.jpg"], 3.0 if args.quick else 10.0)
        save("api", load, api)

    if "memory" in only:
        from bench.memory import measure_api_memory, measure_worker_memory
        with LoadMonitor() as load:
            worker = measure_worker_memory(inputs, 2 if args.quick else 4)
            api_memory = measure_api_memory(inputs.files["photo.jpg"])
        save("memory", load, {"worker": worker, "api": api_memory})

    if "scaling" in only:
        from bench.scaling import measure_scaling
        with LoadMonitor() as load:
            scaling = measure_scaling(inputs, args.worker_concurrency, 40 if args.quick else 200, repeats)
        save("scaling", load, scaling)

    if "latency" in only:
        from bench.latency import measure_latency
        with LoadMonitor() as load:
            latency = measure_latency(inputs, P, args.worker_concurrency, 10 if args.quick else 50)
        save("latency", load, latency)

    if "notifications" in only:
        from bench.notifications import measure_notifications
        with LoadMonitor() as load:
            notifications = measure_notifications(args.quick)
        save("notifications", load, notifications)

    if "inputs" in only:
        from bench.inputs import measure_inputs
        with LoadMonitor() as load:
            figures = measure_inputs({name: inputs.files[name] for name in ("photo.jpg", "photo.png")},
                                     20 if args.quick else 100)
        save("inputs", load, figures)

    if "fairness" in only:
        from bench.fairness import measure_fairness
        with LoadMonitor() as load:
            fairness = measure_fairness(inputs.files["photo.jpg"], args.quick, P, args.worker_concurrency)
        save("fairness", load, fairness)

    if "engine_sharp" in only:
        from bench.engine_sharp import measure_engine_vs_sharp
        with LoadMonitor() as load:
            engine = measure_engine_vs_sharp(args.quick)
        save("engine_sharp", load, engine)

    # Sections written by other scripts (bench/plumbing.py, bench/api_cpu.py), run as they are
    # run by hand; their JSON is stored as it is printed.
    if "plumbing" in only:
        with LoadMonitor() as load:
            plumbing = run_module("bench.plumbing", ["--jobs", "40" if args.quick else "300",
                                                     "--repeats", str(repeats)])
        save("plumbing", load, plumbing)

    if "api_cpu" in only:
        with LoadMonitor() as load:
            api_cpu = run_module("bench.api_cpu", ["--jobs", "100", "--upload-jobs", "20"] if args.quick else [])
        save("api_cpu", load, api_cpu)

    if "img" in only:
        from bench.img import measure_img
        with LoadMonitor() as load:
            img = measure_img(inputs, P, args.worker_concurrency, repeats, seconds, thumbor_exe)
        save("img", load, img)

    report.write(results, QUICK / "benchmarks.md" if args.quick else report.DOC)
    where = f"{results.relative_to(WORK.parent.parent)}/*.json and " + (
        "bench/.work/quick/benchmarks.md (a --quick run leaves the committed figures alone)" if args.quick
        else "docs/benchmarks.md")
    log(f"done in {time.time() - started:.0f}s; wrote {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
