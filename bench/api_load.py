"""API under load: JSON submits and status reads at fixed request rates, open loop, one API process."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from bench.common import BENCH, LocalStack, load_average, log

RATES = (250, 500, 1000)
TARGETS = {"submit": (500, 50.0), "status": (1000, 20.0)}
"""kind -> (rate, p99 limit in ms) the issue asks for."""


def loadtest(module: Path, options: dict) -> dict:
    env = {**os.environ, "LOADTEST_MODULE": (module / "index.js").as_uri()}
    out = subprocess.run(["node", str(BENCH / "loadtest_driver.mjs"), json.dumps(options)], env=env,
                         capture_output=True, text=True, timeout=options["maxSeconds"] + 60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def measure_api(module: Path, photo: Path, seconds: float, rates=RATES) -> dict:
    """Stack with the API, NATS and Redis but no workers (stopped: submits only queue up, so
    the API is measured alone, not competing with image processing for the two cores)."""
    out: dict = {"workers": "none running (jobs stay queued)", "seconds_per_rate": seconds,
                 "tool": "loadtest (npm), --rps open loop, keep-alive", "submit": {}, "status": {}}
    with LocalStack("api", workers=0) as stack:
        key = stack.put("bench/photo.jpg", photo)
        body = {"input": {"storage_key": key}, "parameters": {"width": 512, "height": 512, "quality": 80}}
        job_id = post_json(f"{stack.url}/api/v1/resize", body)["job_id"]
        for kind in ("submit", "status"):
            for rate in rates:
                options = {"url": f"{stack.url}/api/v1/resize" if kind == "submit" else
                           f"{stack.url}/api/v1/jobs/{job_id}",
                           "requestsPerSecond": rate, "maxRequests": int(rate * seconds), "maxSeconds": seconds + 10,
                           "concurrency": 1, "agentKeepAlive": True, "timeout": 10000}
                if kind == "submit":
                    options.update(method="POST", body=body, contentType="application/json")
                loadtest(module, {**options, "maxRequests": int(rate * 1)})  # warm-up: 1 s
                time.sleep(0.5)
                result = loadtest(module, options)
                result["load_average"] = load_average()
                out[kind][str(rate)] = result
                p = result["percentiles"]
                log(f"api {kind} @ {rate} rps: effective {result['effectiveRps']} p50 {p['50']} p95 {p['95']} "
                    f"p99 {p['99']} ms, errors {result['totalErrors']}")
                time.sleep(1.0)
    return out
