"""The local-storage sweep of unclaimed direct uploads (S3 uses a bucket lifecycle rule instead,
deploy/s3/uploads-lifecycle.json).

It deletes every file under ``uploads/`` last written more than UPLOAD_RETENTION ago, and
nothing else. It need not know which uploads were claimed: a claim copies the upload to
``inputs/<tenant>/upload-<id>`` (pixq.names.claimed_upload_key), which the jobs read and no
sweep touches. Deleting is by modification time, so an upload re-posted before its URL expired
is kept UPLOAD_RETENTION from that last write. Leftover ``.part-`` files of interrupted
uploads go the same way.
"""

import asyncio
import os
import stat
import time
from pathlib import Path

import structlog

from pixq import housekeeping
from pixq.names import UPLOADS_PREFIX
from pixq.storage.local import LocalStorage

log = structlog.get_logger("pixq.uploads")


def sweep_expired_uploads(storage: LocalStorage, retention: float, now: float | None = None) -> int:
    """Delete upload files older than ``retention`` seconds; returns how many were deleted.

    Walks ``uploads/<tenant>/`` only (two levels, no symlinks followed); a file that vanishes
    meanwhile (a concurrent sweep, another replica) is simply skipped."""
    cutoff = (time.time() if now is None else now) - retention
    root = storage.root / UPLOADS_PREFIX.rstrip("/")
    deleted = 0
    for tenant_dir in _entries(root):
        if not tenant_dir.is_dir() or tenant_dir.is_symlink():
            continue
        for entry in _entries(tenant_dir):
            try:
                info = entry.lstat()
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    entry.unlink()
                    deleted += 1
            except FileNotFoundError:
                continue
    return deleted


def _entries(directory: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(directory)]
    except (FileNotFoundError, NotADirectoryError):
        return []


async def run_upload_sweeper(storage: LocalStorage, retention: float, interval: float, stop: asyncio.Event) -> None:
    """Sweep at once, then every ``interval`` seconds until ``stop`` (pixq.housekeeping); a
    failed sweep (a disk error) is logged and tried again next time."""
    async def sweep() -> None:
        deleted = await asyncio.to_thread(sweep_expired_uploads, storage, retention)
        if deleted:
            log.info("uploads_swept", deleted=deleted, retention=retention)
    await housekeeping.every(interval, stop, sweep, "upload_sweep", (OSError,))
