"""`pixq`: the command line over the HTTP API.

    pixq submit resize photo.jpg --width 512 --wait --output out.jpg
    pixq submit resize photos/ --width 512 --output thumbs/      (a directory: batches + progress bar)
    pixq submit crop --key uploads/a.png --x 0 --y 0 --width 100 --height 100
    pixq submit resize --url https://images.example.com/a.jpg --width 512 --wait   (worker fetches it)
    pixq submit job photo.jpg --spec '{"variants": [{"name": "thumb", "width": 128}]}'
    pixq submit job photo.jpg --preset avatar        (or --preset avatar@2; --key/--url/DIR too)
    pixq status JOB_ID [--wait]
    pixq watch JOB_ID                                             (one JSON line per event)
    pixq ls [--status S] [--type T] [--limit N | --all] [--cursor C]
    pixq dlq ls | show JOB_ID | replay JOB_ID|--all [--error-code C] | purge JOB_ID|--all
    pixq upload photo.jpg [--submit resize --width 512 --wait]      (direct upload: prints upload_id)

PIXQ_API_URL (default http://127.0.0.1:8080) and PIXQ_API_KEY configure it. Output is JSON
(JSON lines for watch, ls and directories). ``--wait`` and ``watch`` follow the job's SSE
stream (pixq.cli_follow), polling only a server that has none. Every request goes through
pixq.client.AsyncClient (retries, Idempotency-Keys, SSE resumes); pixq.cli_client turns its
answers back into the server's JSON.
Exit status: 0 success, 1 a job failed (or a directory's file was refused), 2 a request was
refused or the API is unreachable.
"""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from pixq.cli_batch import DEFAULT_BATCH_BYTES, MAX_BATCH_ITEMS, submit_directory
from pixq.cli_client import CliError, open_client, plain
from pixq.cli_follow import TERMINAL, follow_job
from pixq.client import AsyncClient, PixqClientError, StorageKeyInput, UploadIdInput, UrlInput
from pixq.client.aio import Source
from pixq.client.files import image_type
from pixq.jobs import JobType

__all__ = ["CliError", "TERMINAL", "amain", "build_parser", "main"]

KINDS = ("analyze", "crop", "job", "resize")
"""What ``pixq submit KIND`` and ``pixq upload --submit KIND`` submit."""
PARAMETERS = ("width", "height", "fit", "format", "quality", "x", "y", "gravity", "background", "enlarge",
              "include_gps")
LIST_PAGE_MAX = 100


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in PARAMETERS if getattr(args, name, None) is not None}


def _job_request(args: argparse.Namespace) -> dict[str, Any]:
    """What a batch item asks: its type and parameters (or a pipeline's spec)."""
    if args.kind == "job":
        if getattr(args, "preset", None):
            return {"type": "pipeline", "preset": args.preset}
        return {"type": "pipeline", "spec": json.loads(args.spec)}
    return {"type": args.kind, "parameters": _parameters(args)}


async def _wait(client: AsyncClient, job_id: str, timeout: float) -> dict:
    """Follow the job to its end, then GET it: the answer carries fresh download URLs."""
    try:
        await asyncio.wait_for(follow_job(client, job_id), timeout)
    except asyncio.TimeoutError:
        status = await client.get_job(job_id)
        raise CliError(f"job {job_id} is still {status.status} after {timeout:g}s") from None
    return plain(await client.get_job(job_id))


async def _submit_job(client: AsyncClient, kind: str, source: Source, args: argparse.Namespace) -> dict:
    """One submit of ``kind`` (``job``: a pipeline, from --spec or --preset)."""
    options = dict(callback_url=getattr(args, "callback_url", None), idempotency_key=args.idempotency_key)
    if kind == "job":
        if args.preset:  # a preset replaces the spec (the API refuses both together)
            accepted = await client.pipeline(source, preset=args.preset, **options)
        else:
            accepted = await client.pipeline(source, json.loads(args.spec), **options)
    else:
        submit = {"resize": client.resize, "crop": client.crop, "analyze": client.analyze}[kind]
        accepted = await submit(source, _parameters(args), **options)
    return plain(accepted)


async def _finish(client: AsyncClient, accepted: dict, args: argparse.Namespace) -> dict:
    """``--wait``/``--output``: follow the job and download its result."""
    if not (args.wait or args.output):
        return accepted
    status = await _wait(client, accepted["job_id"], args.timeout)
    if args.output and status["status"] == "completed":
        await client.download(status["result"]["url"], Path(args.output))
    return status


async def submit(client: AsyncClient, args: argparse.Namespace) -> dict:
    source: Source = Path(args.file) if args.file else UrlInput(url=args.url) if args.url else \
        StorageKeyInput(storage_key=args.key)
    return await _finish(client, await _submit_job(client, args.kind, source, args), args)


async def upload(client: AsyncClient, args: argparse.Namespace) -> dict:
    """``pixq upload``: the direct upload, then (``--submit``) the job, then (``--wait``) its end."""
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    content_type = args.content_type
    if content_type is None:
        with path.open("rb") as handle:
            head = handle.read(32)
        try:
            content_type = image_type(head, path.name)
        except PixqClientError:
            raise CliError(f"cannot tell the image type of {path}; pass --content-type image/...") from None
    uploaded = plain(await client.upload(path, content_type))
    if not args.submit:
        return uploaded
    accepted = await _submit_job(client, args.submit, UploadIdInput(upload_id=uploaded["upload_id"]), args)
    return {**uploaded, **await _finish(client, accepted, args)}


async def watch(client: AsyncClient, args: argparse.Namespace) -> int:
    def emit(envelope: dict) -> None:
        print(json.dumps(envelope), flush=True)

    try:
        status = await asyncio.wait_for(follow_job(client, args.job_id, emit), args.timeout)
    except asyncio.TimeoutError:
        raise CliError(f"job {args.job_id} did not finish within {args.timeout:g}s") from None
    return 0 if status["status"] == "completed" else 1


async def list_jobs(client: AsyncClient, args: argparse.Namespace) -> None:
    """JSON lines, newest first, following ``next_cursor`` until ``--limit`` jobs (or all)."""
    remaining = None if args.all else args.limit
    cursor = args.cursor
    while remaining is None or remaining > 0:
        page = await client.list_jobs(limit=LIST_PAGE_MAX if remaining is None else min(LIST_PAGE_MAX, remaining),
                                      cursor=cursor, status=args.status, type=args.type,
                                      created_after=args.created_after, created_before=args.created_before,
                                      tenant=args.tenant)
        for item in page.items:
            print(json.dumps(plain(item)), flush=True)
        if remaining is not None:
            remaining -= len(page.items)
        cursor = page.next_cursor
        if not cursor:
            return
    print(f"pixq: more jobs follow; continue with --cursor {cursor}", file=sys.stderr)


async def dlq(client: AsyncClient, args: argparse.Namespace) -> Any:
    if args.action == "ls":
        return await client.list_dead(limit=args.limit, offset=args.offset)
    if args.action == "show":
        return await client.get_dead(args.job_id)
    if args.action == "replay":
        if args.job_id:
            return await client.replay_dead(args.job_id)
        return await client.replay_dead_many(error_code=args.error_code)
    if args.job_id:
        return await client.purge_dead(args.job_id)
    return await client.purge_dead_all()


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """What a submitted job may say, for ``submit`` and ``upload --submit`` alike."""
    for name in ("width", "height", "quality", "x", "y"):
        parser.add_argument(f"--{name}", type=int)
    for name in ("fit", "format", "gravity", "background"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--enlarge", action="store_true", default=None)
    parser.add_argument("--include-gps", action="store_const", const=True, default=None,
                        help="analyze: include the photo's GPS position (off by default: personal data)")
    parser.add_argument("--spec", default='{"variants": [{"name": "default"}]}', help="pipeline spec JSON (job)")
    parser.add_argument("--preset", help="job: a preset of PRESETS_FILE, NAME or NAME@VERSION (instead of --spec)")
    parser.add_argument("--idempotency-key")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixq", description="pixq command line (talks to the HTTP API)")
    parser.add_argument("--api-url", default=os.environ.get("PIXQ_API_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--api-key", default=os.environ.get("PIXQ_API_KEY", ""))
    commands = parser.add_subparsers(dest="command", required=True)

    sub = commands.add_parser("submit", help="submit a resize, crop, pipeline or analyze job (or a directory of them)")
    sub.add_argument("kind", choices=KINDS)
    sub.add_argument("file", nargs="?", help="image to upload, or a directory of images (or use --key)")
    sub.add_argument("--key", help="storage_key of an object already in the bucket")
    sub.add_argument("--url", help="source URL the worker fetches (its host must be allowed)")
    _add_job_options(sub)
    sub.add_argument("--callback-url", help="webhook URL (for a directory: its batches' batch.completed)")
    sub.add_argument("--wait", action="store_true", help="wait for the job to finish")
    sub.add_argument("--output", help="download the result here (implies --wait); a directory for a directory")
    sub.add_argument("--timeout", type=float, default=300.0)
    sub.add_argument("--recursive", action="store_true", help="directory: include subdirectories")
    sub.add_argument("--no-wait", action="store_true", help="directory: submit only, do not follow")
    sub.add_argument("--batch-size", type=int, default=MAX_BATCH_ITEMS, help="directory: files per batch (≤100)")
    sub.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES, help="directory: bytes per batch")

    status = commands.add_parser("status", help="show a job's status")
    status.add_argument("job_id")
    status.add_argument("--wait", action="store_true")
    status.add_argument("--timeout", type=float, default=300.0)

    watching = commands.add_parser("watch", help="print a job's events as JSON lines until it ends")
    watching.add_argument("job_id")
    watching.add_argument("--timeout", type=float, default=None)

    listing = commands.add_parser("ls", help="list jobs, newest first (JSON lines)")
    listing.add_argument("--status", choices=["queued", "processing", "retrying", "completed", "failed"])
    listing.add_argument("--type", choices=[job_type.value for job_type in JobType])
    listing.add_argument("--created-after")
    listing.add_argument("--created-before")
    listing.add_argument("--tenant", help="admin keys: list one tenant")
    listing.add_argument("--limit", type=int, default=20, help="how many jobs (default 20)")
    listing.add_argument("--all", action="store_true", help="every job, following cursors to the end")
    listing.add_argument("--cursor", help="continue after a previous listing")

    dead = commands.add_parser("dlq", help="inspect and replay the dead-letter queue (admin key)")
    dead.add_argument("action", choices=["ls", "show", "replay", "purge"])
    dead.add_argument("job_id", nargs="?")
    dead.add_argument("--all", action="store_true", help="replay or purge every entry")
    dead.add_argument("--error-code", help="replay only entries with this last error code")
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument("--offset", type=int, default=0)

    up = commands.add_parser("upload", help="upload an image directly to storage (presigned); prints its upload_id")
    up.add_argument("file")
    up.add_argument("--content-type", help="image/* type (default: from the file's first bytes or extension)")
    up.add_argument("--submit", choices=KINDS, help="then submit this job on the upload")
    _add_job_options(up)
    up.add_argument("--wait", action="store_true", help="wait for the submitted job to finish")
    up.add_argument("--output", help="download the submitted job's result here (implies --wait)")
    up.add_argument("--timeout", type=float, default=300.0)
    return parser


def _print(result: Any) -> None:
    print(json.dumps(result, indent=2), flush=True)


async def run(args: argparse.Namespace) -> int:
    """Run one command (it prints its output); returns the exit status."""
    async with open_client(args.api_url, args.api_key) as client:
        if args.command == "submit":
            if [bool(args.file), bool(args.key), bool(args.url)].count(True) != 1:
                raise CliError("give exactly one of an image file (or directory), --key or --url")
            if args.file and not Path(args.file).exists():
                raise CliError(f"no such file or directory: {args.file}")
            if args.preset and args.kind != "job":
                raise CliError("--preset needs 'submit job': a preset is a pipeline")
            if args.file and Path(args.file).is_dir():
                if not 1 <= args.batch_size <= MAX_BATCH_ITEMS:
                    raise CliError(f"--batch-size must be 1 to {MAX_BATCH_ITEMS}")
                return await submit_directory(client, Path(args.file), _job_request(args), args)
            result = await submit(client, args)
        elif args.command == "status":
            result = await (_wait(client, args.job_id, args.timeout) if args.wait else client.get_job(args.job_id))
        elif args.command == "watch":
            return await watch(client, args)
        elif args.command == "ls":
            await list_jobs(client, args)
            return 0
        elif args.command == "upload":
            if args.preset and args.submit != "job":
                raise CliError("--preset needs '--submit job': a preset is a pipeline")
            result = await upload(client, args)
        else:
            if args.action in ("show",) and not args.job_id:
                raise CliError("dlq show needs a JOB_ID")
            if args.action in ("replay", "purge") and not (args.job_id or args.all):
                raise CliError(f"dlq {args.action} needs a JOB_ID or --all")
            result = await dlq(client, args)
    result = plain(result)
    _print(result)
    return 1 if isinstance(result, dict) and result.get("status") == "failed" else 0


async def amain(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run it; errors are printed to stderr. (In-process entry for tests.)"""
    args = build_parser().parse_args(argv)
    try:
        return await run(args)
    except CliError as exc:
        print(f"pixq: {exc}", file=sys.stderr)
        return exc.exit_code
    except PixqClientError as exc:  # refused (ApiError), unreachable, or a stream lost for good
        print(f"pixq: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"pixq: --spec is not valid JSON: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> None:
    try:
        code = asyncio.run(amain(argv))
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    main()
