"""`make bench`, section "engine vs sharp": pixq's engine and sharp, per core, in one run (issue 15).

    .venv/bin/python -m bench.run --only engine_sharp        # or: python -m bench.engine_sharp

The issue's conditions: one thread (VIPS_CONCURRENCY=1 for pyvips, sharp.concurrency(1)), the
libvips operation cache off on both (pyvips.cache_set_max(0), sharp.cache(false)), the two real
photos, fit inside 512x512, JPEG Q80. pixq runs ``worker.imaging.process`` (the whole engine:
header, limits, metadata, shrink-on-load, colour, encode) in a child Python process; sharp runs
in tests/differential's sharp_runner.mjs (`make sharp`). Both start from the input bytes in memory
and end with the encoded bytes.

The two alternate in rounds (sharp, then pixq, ``ROUNDS`` times per photo, each round
``REPETITIONS`` renders after a warm-up), so a load change on a shared machine hits both; the
figure per photo and engine is the median of all its renders, and the ratio is sharp's median
over pixq's (> 1: pixq is faster).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import CORPUS, PHOTOS, REPO, log

REPETITIONS = 10
ROUNDS = 6
WARMUP = 3
PARAMS = {"width": 512, "height": 512, "fit": "inside", "format": "jpeg", "quality": 80}


class PixqChild:
    """worker.imaging.process in its own process, configured before pyvips starts its threads."""

    def __init__(self) -> None:
        env = {**os.environ, "VIPS_CONCURRENCY": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.engine_sharp", "--child"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def bench(self, photo: Path, repetitions: int, fast_shrink: bool | None = None) -> dict:
        """``fast_shrink``: set worker.imaging.load.FAST_SHRINK_ON_LOAD first (None: leave the default)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"photo": str(photo), "repetitions": repetitions, "fast_shrink": fast_shrink}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.engine_sharp child exited ({self.proc.poll()})")
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def child() -> int:
    """Answer {"photo", "repetitions"} lines with the milliseconds of each render."""
    import pyvips

    from pixq.limits import TRUSTED_INPUT_FORMATS, Limits
    from pixq.spec import to_pipeline
    from worker.imaging import process
    from worker.imaging.vips_setup import configure_vips

    configure_vips(1, 0)
    limits = Limits(50 << 20, 50_000_000, 50_000_000, 100, TRUSTED_INPUT_FORMATS)
    spec = to_pipeline("resize", PARAMS)
    from worker.imaging import load

    info = {"vips_concurrency": pyvips.concurrency_get(), "cache_max": pyvips.cache_get_max()}
    default_fast = getattr(load, "FAST_SHRINK_ON_LOAD", None)
    for line in sys.stdin:
        request = json.loads(line)
        if default_fast is not None:
            # the engine's own switch between sharp-like and libvips' shrink-on-load factor
            load.FAST_SHRINK_ON_LOAD = default_fast if request["fast_shrink"] is None else request["fast_shrink"]
        info["fast_shrink_on_load"] = getattr(load, "FAST_SHRINK_ON_LOAD", None)
        data = Path(request["photo"]).read_bytes()
        ms, size = [], 0
        for _ in range(request["repetitions"]):
            started = time.perf_counter()
            output = process(data, spec, limits)[0]
            ms.append((time.perf_counter() - started) * 1000)
            size = len(output.data)
        print(json.dumps({"ms": ms, "bytes": size, "width": output.width, "height": output.height, **info}), flush=True)
    return 0


def sharp_case(photo: Path) -> dict:
    """The same request in sharp's calls (the differential test's translation)."""
    from tests.differential.grid import SHARP_OUTPUT, finishing, sharp_resize
    return {"id": "bench", "input": str(photo), "stages": [[sharp_resize(PARAMS), *finishing("jpeg")]],
            "output": {"format": "jpeg", "options": SHARP_OUTPUT["jpeg"]}, "out": os.devnull}


def both_photos(figures: dict) -> dict:
    """The issue's ratio over its photo set: one render of each photo, sharp's total time over
    pixq's (a catalogue mixes both kinds; the per-photo ratios are published beside it)."""
    pixq_ms = sum(f["pixq_ms_median"] for f in figures.values())
    sharp_ms = sum(f["sharp_ms_median"] for f in figures.values())
    return {"pixq_ms": round(pixq_ms, 2), "sharp_ms": round(sharp_ms, 2), "speed_ratio": round(sharp_ms / pixq_ms, 3)}


def measure_engine_vs_sharp(quick: bool = False) -> dict:
    from tests.differential.sharp_client import SharpRunner

    repetitions, rounds = (4, 2) if quick else (REPETITIONS, ROUNDS)
    figures: dict = {}
    pixq = PixqChild()
    try:
        with SharpRunner() as sharp:
            versions = sharp.versions()
            for name, filename in PHOTOS.items():
                photo = CORPUS / filename
                case = sharp_case(photo)
                sharp.bench(case, WARMUP)
                warm = pixq.bench(photo, WARMUP)
                flip = warm["fast_shrink_on_load"] is not None  # the engine has the switch: time both settings
                sharp_ms: list[float] = []
                pixq_ms: list[float] = []
                other_ms: list[float] = []
                for _ in range(rounds):
                    sharp_ms += sharp.bench(case, repetitions)
                    pixq_ms += pixq.bench(photo, repetitions)["ms"]
                    if flip:
                        other_ms += pixq.bench(photo, repetitions, fast_shrink=not warm["fast_shrink_on_load"])["ms"]
                s, p = statistics.median(sharp_ms), statistics.median(pixq_ms)
                figures[name] = {"file": filename, "renders_per_engine": len(pixq_ms),
                                 "output": f"{warm['width']}x{warm['height']}",
                                 "pixq_ms_median": round(p, 2), "sharp_ms_median": round(s, 2),
                                 "pixq_ms_min": round(min(pixq_ms), 2), "sharp_ms_min": round(min(sharp_ms), 2),
                                 "speed_ratio": round(s / p, 3),
                                 "fast_shrink_on_load": warm["fast_shrink_on_load"]}
                if other_ms:
                    o = statistics.median(other_ms)
                    figures[name]["pixq_other_shrink_ms_median"] = round(o, 2)
                    figures[name]["other_shrink_speed_ratio"] = round(s / o, 3)
                log(f"engine vs sharp, {name}: pixq {p:.1f} ms, sharp {s:.1f} ms, ratio {s / p:.2f}"
                    + (f"; pixq with fast_shrink_on_load={not warm['fast_shrink_on_load']}: "
                       f"{statistics.median(other_ms):.1f} ms" if other_ms else ""))
    finally:
        pixq.close()
    return {"photos": figures, "both_photos": both_photos(figures),
            "config": {**PARAMS, "repetitions": repetitions, "rounds": rounds, "warmup": WARMUP,
                       "pixq": {"vips_concurrency": warm["vips_concurrency"], "cache_max_ops": warm["cache_max"]},
                       "sharp": {"version": versions["versions"]["sharp"], "libvips": versions["versions"]["vips"],
                                 "concurrency": versions["concurrency"], "cache": versions["cache"]["items"]["max"],
                                 "node": versions["node"]}}}


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        sys.exit(child())
    print(json.dumps(measure_engine_vs_sharp("--quick" in sys.argv), indent=2))
