"""Throughput of worker.imaging.process with N job threads, per libvips concurrency/cache.

    PIXQ_CORPUS_DIR=<full corpus> python bench/vips_concurrency.py   (results in docs/operations.md)
The JPEG is vendored in tests/fixtures/sharp; the 2048x1536 PNG is only in the full sharp corpus.
Each setting runs in a fresh process (libvips' thread pool is sized at first use).
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PIXQ_CORPUS_DIR") or REPO / "tests" / "fixtures") / "sharp"


def measure(threads: int, concurrency: int, cache: int, jobs: int) -> dict:
    sys.path.insert(0, str(REPO))
    from pixq.jobs import JobType
    from pixq.limits import TRUSTED_INPUT_FORMATS, Limits
    from pixq.spec import to_pipeline
    from worker.imaging import process
    from worker.imaging.vips_setup import configure_vips

    configure_vips(concurrency, cache)
    limits = Limits(50 << 20, 50_000_000, 50_000_000, 100, TRUSTED_INPUT_FORMATS)
    photo = (CORPUS / "2569067123_aca715a2ee_o.jpg").read_bytes()
    png = (CORPUS / "alpha-premultiply-2048x1536-paper.png").read_bytes()
    spec = to_pipeline(JobType.RESIZE, {"width": 512, "height": 512, "quality": 80})
    result = {"threads": threads, "vips_concurrency": concurrency, "cache_max_ops": cache}
    for name, data in (("jpeg", photo), ("png", png)):
        process(data, spec, limits)
        with ThreadPoolExecutor(threads) as pool:
            started = time.perf_counter()
            list(pool.map(lambda _: process(data, spec, limits), range(jobs)))
            result[name] = round(jobs / (time.perf_counter() - started), 1)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 5:
        print(json.dumps(measure(*map(int, sys.argv[1:]))))
        sys.exit()
    print("| job threads | VIPS_CONCURRENCY | VIPS_CACHE_MAX_OPS | JPEG jobs/s | PNG jobs/s |")
    print("|---|---|---|---|---|")
    for threads, concurrency, cache in ((1, 1, 0), (1, 2, 0), (2, 1, 0), (2, 2, 0), (2, 4, 0),
                                        (4, 1, 0), (4, 2, 0), (2, 1, 100), (2, 1, 1000)):
        out = subprocess.run([sys.executable, __file__, str(threads), str(concurrency), str(cache), "40"],
                             capture_output=True, text=True, check=True).stdout
        row = json.loads(out)
        print(f"| {threads} | {concurrency} | {cache} | {row['jpeg']} | {row['png']} |", flush=True)
