"""The identity of the image engine: which code and libvips made an output.

One home for it because two places key stored outputs by it: the worker's reuse index
(worker.reuse, work done once) and the API's /img result cache (pixq.imgcache). Both images
ship worker/ (the Dockerfiles copy pixq/, api/ and worker/), so the API computes the same value.
"""

import hashlib
from pathlib import Path

import pyvips

_ENGINE_SOURCES = (Path(__file__).parent.parent / "worker" / "imaging", Path(__file__).parent / "formats.py")


def _engine_revision() -> str:
    """A digest of the engine's own source: worker/imaging/*.py and pixq/formats.py (output
    formats, extensions). Any change there, a comment included, is a new revision."""
    digest = hashlib.sha256()
    for root in _ENGINE_SOURCES:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


ENGINE_VERSION = (f"pixq-engine/{_engine_revision()} "
                  f"libvips/{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}")
"""What made an output: pixq's engine revision plus the libvips version, part of every fingerprint.

Bump rule: none to remember. The revision is a digest of the engine's source files, computed
at import, so every change to worker/imaging (or to pixq/formats.py) starts a new revision and
no output of the old code is reused by the new; so does a different libvips. A change that
alters outputs from outside those files (a new build of libjpeg, libpng or libwebp under the
same libvips version: a new worker image) is not seen: after such a change either delete the
``pixq:reuse:*`` keys or set REUSE_OUTPUTS=false until they expire. During a rolling upgrade,
workers of the old and the new engine keep apart records (their fingerprints differ)."""
