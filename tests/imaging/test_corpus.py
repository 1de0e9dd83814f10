"""Every corpus image completes or fails with a specific code; none crashes or hangs.

Each file runs in a child process (tests/imaging/corpus_child.py) so a segfault or a hang
fails the test naming the file. By default every vendored image of tests/fixtures (the
bombs, truncated and malformed files, EXIF orientations, real photos). PIXQ_CORPUS_DIR
points it at a larger corpus with the same pillow/ and sharp/ layout (e.g. all of Pillow's
and sharp's test images), of which a deterministic sample (~60 files) runs unless
PIXQ_FULL_CORPUS=1 (`make test-corpus`) asks for everything.
"""

import os
import sys
import textwrap

import pytest

from tests.fixtures import FIXTURES, corpus_dir
from tests.imaging.corpus import corpus_files, run_corpus

pytestmark = pytest.mark.corpus

ACCEPTED = {"ok", "INVALID_IMAGE", "UNSUPPORTED_FORMAT", "UNSUPPORTED_MEDIA_TYPE", "IMAGE_TOO_LARGE",
            "TOO_MANY_FRAMES", "CROP_OUT_OF_BOUNDS", "OUTPUT_TOO_LARGE"}
"""PROCESSING_FAILED (an unmapped libvips error), HANG, CRASH and ESCAPED fail the test."""

EXPECTED = {
    "sharp/giant-image.jpg": "IMAGE_TOO_LARGE",
    "sharp/65536-uint32-limit.png": "IMAGE_TOO_LARGE",
    "sharp/truncated.jpg": "INVALID_IMAGE",
    "sharp/truncated.png": "INVALID_IMAGE",
    "sharp/corrupt-header.jpg": "INVALID_IMAGE",
    "sharp/check.svg": "UNSUPPORTED_FORMAT",
    "pillow/decompression_bomb.gif": "INVALID_IMAGE",
    "pillow/truncated_jpeg.jpg": "INVALID_IMAGE",
    "pillow/hopper.bmp": "UNSUPPORTED_FORMAT",
}
"""Resize outcome of files whose code is known."""

ALSO_SAMPLED = ["sharp/Channel_digital_image_CMYK_color.jpg", "sharp/Flag_of_the_Netherlands-16bit.png",
                "sharp/animated-loop-3.webp", "sharp/rotating-squares.gif", "sharp/pitm.avif",
                "sharp/Portrait_8.jpg", "pillow/decompression_bomb_extents.gif", "pillow/oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif",
                "pillow/libtiff_segfault.tif", "pillow/crash-2020-10-test.tif", "pillow/broken_data_stream.png"]


def sample(root) -> list:
    files = corpus_files(root)
    if os.environ.get("PIXQ_FULL_CORPUS") == "1" or root == FIXTURES:
        return files
    wanted = {root / name for name in list(EXPECTED) + ALSO_SAMPLED}
    every = max(1, len(files) // 40)
    return sorted(set(files[::every]) | {f for f in files if f in wanted})


@pytest.mark.timeout(1800)
def test_corpus_completes_or_fails_with_a_code():
    root = corpus_dir()
    if root == FIXTURES:  # the vendored set must hold every named file; a missing one fails
        missing = [name for name in list(EXPECTED) + ALSO_SAMPLED if not (root / name).is_file()]
        assert not missing, f"vendored fixtures missing from {root}: {missing}"
    files = sample(root)
    results = run_corpus(files, workers=2, per_file_timeout=60)
    problems = []
    for path in files:
        result = results.get(str(path), {"resize": "NO_RESULT", "crop": "NO_RESULT"})
        name = str(path.relative_to(root))
        for job in ("resize", "crop"):
            if result[job] not in ACCEPTED:
                problems.append(f"{name} {job}: {result[job]} {result.get(job + '_message', '')}")
        if name in EXPECTED and result["resize"] != EXPECTED[name]:
            problems.append(f"{name}: expected {EXPECTED[name]}, got {result['resize']}")
    assert not problems, "\n".join(problems)


def test_harness_names_crashing_and_hanging_files(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent("""
        import json, os, signal, sys, threading
        for line in sys.stdin:
            path = line.strip()
            print(json.dumps({"start": path}), flush=True)
            if path.endswith("crash"):
                os.kill(os.getpid(), signal.SIGSEGV)
            if path.endswith("hang"):
                threading.Event().wait()
            print(json.dumps({"file": path, "resize": "ok", "crop": "ok"}), flush=True)
    """))
    files = [tmp_path / name for name in ("a", "crash", "b", "hang", "c")]
    results = run_corpus(files, workers=1, per_file_timeout=1.0, child=[sys.executable, str(child)])
    verdicts = {name: results[str(tmp_path / name)]["resize"] for name in ("a", "crash", "b", "hang", "c")}
    assert verdicts == {"a": "ok", "crash": "CRASH(-11)", "b": "ok", "hang": "HANG", "c": "ok"}
