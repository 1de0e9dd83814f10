"""``pixq submit resize|crop|job DIR``: a directory's images as batches, with a progress bar.

Image files (by extension, sorted; subdirectories with ``--recursive``) are split into
batches of at most MAX_BATCH_ITEMS files and ``--batch-bytes`` bytes (a larger file goes
alone), each uploaded as one multipart ``POST /api/v1/jobs/batch``. Each item carries an
Idempotency-Key derived from the file's path, size and modification time and from what is
asked of it, so running the same command again replays the jobs instead of repeating them,
while an edited file or other parameters make new ones.

Output: one JSON line per batch as it is accepted, then one per file; a summary line on
stderr; exit status 1 when any file was refused or its job failed.
"""

import asyncio
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pixq import formats
from pixq.cli_client import CliError, plain
from pixq.cli_follow import follow_batches
from pixq.client import AsyncClient
from pixq.schemas import BatchAccepted, BatchDocument

MAX_BATCH_ITEMS = 100
"""The API's limit per batch (pixq.batches.MAX_ITEMS)."""
DEFAULT_BATCH_BYTES = 64 * 1024 * 1024
"""Well under the API's MAX_BATCH_BYTES, so one batch is a request a proxy lets through."""
IMAGE_SUFFIXES = frozenset(
    f".{name}" for fmt in formats.FORMATS if fmt.decode == "trusted" for name in (fmt.extension, fmt.name, *fmt.aliases))
FETCH_CONCURRENCY = 8


@dataclass
class FileJob:
    path: Path
    size: int
    key: str
    job_id: str | None = None
    error: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    outputs: list[str] = field(default_factory=list)


def image_files(directory: Path, recursive: bool) -> list[Path]:
    found = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(path for path in found if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def idempotency_key(path: Path, size: int, mtime_ns: int, job: dict[str, Any]) -> str:
    """Same file (path, size, mtime) and same request: same key, so a re-run replays the job."""
    identity = json.dumps([str(path.resolve()), size, mtime_ns, job], sort_keys=True)
    return "pixq-cli-" + hashlib.sha256(identity.encode()).hexdigest()[:48]


def plan(files: list[FileJob], max_items: int, max_bytes: int) -> list[list[FileJob]]:
    """Consecutive groups of at most ``max_items`` files and ``max_bytes`` bytes."""
    groups: list[list[FileJob]] = []
    size = 0
    for item in files:
        if not groups or len(groups[-1]) >= max_items or (groups[-1] and size + item.size > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item.size
    return groups


async def _post_batch(client: AsyncClient, group: list[FileJob], job: dict[str, Any],
                      callback_url: str | None) -> BatchAccepted:
    items = [{**job, "input": {"part": f"f{index}"}, "idempotency_key": item.key} for index, item in enumerate(group)]
    return await client.submit_batch(items, files={f"f{index}": item.path for index, item in enumerate(group)},
                                     callback_url=callback_url)


def _targets(job: FileJob, root: Path, output: Path, taken: set[Path]) -> list[tuple[str, Path]]:
    """Where a completed job's outputs go: the file's path under ``output``, the format's
    extension instead of its own (``.<variant>`` before it for a pipeline's variants)."""
    result = job.status["result"]
    relative = job.path.relative_to(root)
    variants = result.get("variants") or [{**result, "name": None}]
    targets = []
    for variant in variants:
        fmt = formats.BY_NAME.get(variant["format"])
        extension = fmt.extension if fmt else variant["format"]
        suffix = f".{variant['name']}" if variant["name"] else ""
        target = output / relative.parent / f"{relative.stem}{suffix}.{extension}"
        if target in taken:  # a.png and a.jpg both resized to JPEG: keep the source's suffix too
            target = output / relative.parent / f"{relative.name}{suffix}.{extension}"
        taken.add(target)
        targets.append((variant["url"], target))
    return targets


async def submit_directory(client: AsyncClient, root: Path, job: dict[str, Any], options: Any,
                           out: TextIO | None = None) -> int:
    """Submit ``root``'s images as batches; unless ``options.no_wait``, follow them to the end
    with a progress bar and download results into ``options.output``. Returns the exit status."""
    out = out or sys.stdout
    paths = image_files(root, options.recursive)
    if not paths:
        raise CliError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    files = []
    for path in paths:
        stat = path.stat()
        files.append(FileJob(path, stat.st_size, idempotency_key(path, stat.st_size, stat.st_mtime_ns, job)))
    batch_ids = []
    for group in plan(files, options.batch_size, options.batch_bytes):
        answer = await _post_batch(client, group, job, options.callback_url)
        for item, result in zip(group, answer.items):
            item.job_id, item.error = result.job_id, plain(result.error) if result.error else None
        batch_ids.append(answer.batch_id)
        _line(out, {"batch_id": answer.batch_id, "files": len(group), "accepted": answer.accepted,
                    "refused": answer.refused})
    accepted = [item for item in files if item.job_id]
    if not options.no_wait and accepted:
        await _follow(client, batch_ids, len(accepted))
        await _fetch_statuses(client, accepted)
        if options.output:
            taken: set[Path] = set()
            for item in accepted:
                if item.status and item.status["status"] == "completed":
                    for url, target in _targets(item, root, Path(options.output), taken):
                        await client.download(url, target)
                        item.outputs.append(str(target))
    for item in files:
        _line(out, _file_line(item, root))
    return _summary(files, batch_ids, waited=not options.no_wait)


async def _follow(client: AsyncClient, batch_ids: list[str], total: int) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), redirect_stdout=False, redirect_stderr=False) as progress:
        task = progress.add_task(f"{len(batch_ids)} batch{'es' if len(batch_ids) > 1 else ''}", total=total,
                                 failed=0)

        def update(documents: dict[str, BatchDocument]) -> None:
            counts = [document.counts for document in documents.values()]
            failed = sum(c.get("failed", 0) for c in counts)
            done = failed + sum(c.get("completed", 0) + c.get("expired", 0) for c in counts)
            progress.update(task, completed=min(done, total), failed=failed)

        await follow_batches(client, batch_ids, update)


async def _fetch_statuses(client: AsyncClient, items: list[FileJob]) -> None:
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def fetch(item: FileJob) -> None:
        async with gate:
            item.status = plain(await client.get_job(item.job_id))

    await asyncio.gather(*(fetch(item) for item in items))


def _file_line(item: FileJob, root: Path) -> dict[str, Any]:
    line: dict[str, Any] = {"file": str(item.path.relative_to(root))}
    if item.error:
        return {**line, "status": "refused", "error": item.error}
    line.update(job_id=item.job_id, status=item.status["status"] if item.status else "queued")
    if item.status and item.status.get("error_code"):
        line.update(error_code=item.status["error_code"], error=item.status.get("error"))
    if item.outputs:
        line["outputs"] = item.outputs
    return line


def _summary(files: list[FileJob], batch_ids: list[str], waited: bool) -> int:
    refused = sum(1 for item in files if item.error)
    statuses = [item.status["status"] for item in files if item.status]
    failed, completed = statuses.count("failed"), statuses.count("completed")
    parts = [f"{completed} completed", f"{failed} failed"] if waited else [f"{len(files) - refused} queued"]
    print(f"pixq: {len(files)} files in {len(batch_ids)} batch{'es' if len(batch_ids) != 1 else ''}: "
          f"{', '.join(parts)}, {refused} refused", file=sys.stderr)
    return 1 if refused or failed else 0


def _line(out: TextIO, value: dict[str, Any]) -> None:
    out.write(json.dumps(value) + "\n")
    out.flush()
