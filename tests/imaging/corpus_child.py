"""Child process of test_corpus: runs resize and crop on each path read from stdin.

Prints one JSON line before each file ({"start": path}) and one after ({"file": path,
"resize": code, "crop": code, "seconds": s}), flushing each, so the parent can name the
file that crashed or hung this process. A code is "ok" or a PixqError code.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pixq.errors import PixqError  # noqa: E402
from pixq.jobs import JobType  # noqa: E402
from pixq.limits import TRUSTED_INPUT_FORMATS, Limits  # noqa: E402
from pixq.spec import to_pipeline  # noqa: E402
from worker.imaging import process  # noqa: E402
from worker.imaging.vips_setup import configure_vips  # noqa: E402

LIMITS = Limits(max_input_bytes=50 * 1024 * 1024, max_input_pixels=50_000_000,
                max_output_pixels=50_000_000, max_animation_frames=100,
                allowed_input_formats=TRUSTED_INPUT_FORMATS)
JOBS = {
    "resize": to_pipeline(JobType.RESIZE, {"width": 200, "height": 200, "fit": "cover"}),
    "crop": to_pipeline(JobType.CROP, {"x": 1, "y": 1, "width": 32, "height": 32}),
}


def run(path: str) -> dict:
    data = Path(path).read_bytes()
    result: dict = {"file": path}
    started = time.monotonic()
    for name, spec in JOBS.items():
        try:
            outputs = process(data, spec, LIMITS)
            result[name] = "ok" if outputs and outputs[0].data else "EMPTY_OUTPUT"
        except PixqError as exc:
            result[name] = exc.code.value
            result[f"{name}_message"] = exc.message
        except BaseException as exc:  # noqa: BLE001 - reported as a contract breach
            result[name] = f"ESCAPED:{type(exc).__name__}"
            result[f"{name}_message"] = str(exc)[:200]
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def main() -> None:
    configure_vips(1, 0, LIMITS)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        print(json.dumps({"start": path}), flush=True)
        print(json.dumps(run(path)), flush=True)


if __name__ == "__main__":
    main()
