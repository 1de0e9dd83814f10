"""Multi-variant decoding strategy: thumbnail per variant from the buffer vs decode once.

    python bench/variants.py   (the photo from tests/fixtures/sharp, or PIXQ_CORPUS_DIR/sharp)
"""

import os
import time
from pathlib import Path

import pyvips

CORPUS = Path(os.environ.get("PIXQ_CORPUS_DIR") or Path(__file__).resolve().parents[1] / "tests" / "fixtures")
SIZES = (1024, 512, 128)


def per_variant(data: bytes) -> None:
    for size in SIZES:
        pyvips.Image.thumbnail_buffer(data, size, height=size).write_to_buffer(".jpg")


def decode_once(data: bytes) -> None:
    image = pyvips.Image.new_from_buffer(data, "", access="sequential").autorot().copy_memory()
    for size in SIZES:
        image.thumbnail_image(size, height=size).write_to_buffer(".jpg")


def shrink_once(data: bytes) -> None:
    image = pyvips.Image.thumbnail_buffer(data, SIZES[0], height=SIZES[0]).copy_memory()
    for size in SIZES:
        image.thumbnail_image(size, height=size).write_to_buffer(".jpg")


if __name__ == "__main__":
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    photo = pyvips.Image.new_from_file(str(CORPUS / "sharp" / "2569067123_aca715a2ee_o.jpg"))
    inputs = {"jpeg": photo.write_to_buffer(".jpg", Q=90), "png": photo.write_to_buffer(".png"),
              "webp": photo.write_to_buffer(".webp", Q=90)}
    for fmt, data in inputs.items():
        for strategy in (per_variant, decode_once, shrink_once):
            strategy(data)
            started, runs = time.perf_counter(), 5
            for _ in range(runs):
                strategy(data)
            print(f"{fmt:5} {strategy.__name__:12} {(time.perf_counter() - started) / runs * 1000:7.1f} ms/job")
