"""`pixq`: the command line over the HTTP API.

    pixq submit resize photo.jpg --width 512 --wait --output out.jpg
    pixq submit crop --key uploads/a.png --x 0 --y 0 --width 100 --height 100
    pixq submit job photo.jpg --spec '{"variants": [{"name": "thumb", "width": 128}]}'
    pixq status JOB_ID [--wait]
    pixq dlq ls | show JOB_ID | replay JOB_ID|--all [--error-code C] | purge JOB_ID|--all

PIXQ_API_URL (default http://127.0.0.1:8080) and PIXQ_API_KEY configure it. Output is JSON.
Exit status: 0 success, 1 the job failed, 2 a request was refused or the API is unreachable.
"""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

TERMINAL = ("completed", "failed")


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def call(self, method: str, path: str, **kwargs) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            async with self.session.request(method, self.base_url + path, headers=headers, **kwargs) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot reach the pixq API at {self.base_url}: {exc}") from None
        if response.status >= 400:
            error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            raise CliError(f"{response.status} {error.get('code', '')}: {error.get('message', body)}")
        return body

    async def wait(self, job_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.call("GET", f"/api/v1/jobs/{job_id}")
            if status["status"] in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise CliError(f"job {job_id} is still {status['status']} after {timeout:g}s")
            await asyncio.sleep(0.2)

    async def download(self, url: str, target: Path) -> None:
        if url.startswith("/"):
            url = self.base_url + url
        async with self.session.get(url) as response:
            if response.status != 200:
                raise CliError(f"download failed with HTTP {response.status}")
            target.write_bytes(await response.read())


PARAMETERS = ("width", "height", "fit", "format", "quality", "x", "y", "gravity", "background", "enlarge")


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in PARAMETERS if getattr(args, name, None) is not None}


async def submit(client: Client, args: argparse.Namespace) -> dict:
    path = {"resize": "/api/v1/resize", "crop": "/api/v1/crop", "job": "/api/v1/jobs"}[args.kind]
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    spec = json.loads(args.spec) if args.kind == "job" else None
    if args.file:
        form = aiohttp.FormData()
        form.add_field("file", open(args.file, "rb"), filename=Path(args.file).name)
        if spec is not None:
            form.add_field("spec", json.dumps(spec))
        for name, value in _parameters(args).items():
            form.add_field(name, str(value).lower() if isinstance(value, bool) else str(value))
        accepted = await client.call("POST", path, data=form, headers=headers)
    else:
        parameters = spec if spec is not None else _parameters(args)
        accepted = await client.call("POST", path, headers=headers,
                                     json={"input": {"storage_key": args.key}, "parameters": parameters})
    if not (args.wait or args.output):
        return accepted
    status = await client.wait(accepted["job_id"], args.timeout)
    if args.output and status["status"] == "completed":
        await client.download(status["result"]["url"], Path(args.output))
    return status


async def dlq(client: Client, args: argparse.Namespace) -> Any:
    if args.action == "ls":
        return await client.call("GET", f"/api/v1/dlq?limit={args.limit}&offset={args.offset}")
    if args.action == "show":
        return await client.call("GET", f"/api/v1/dlq/{args.job_id}")
    if args.action == "replay":
        if args.job_id:
            return await client.call("POST", f"/api/v1/dlq/{args.job_id}/replay")
        query = f"?error_code={args.error_code}" if args.error_code else ""
        return await client.call("POST", f"/api/v1/dlq/replay{query}")
    if args.job_id:
        return await client.call("DELETE", f"/api/v1/dlq/{args.job_id}")
    return await client.call("DELETE", "/api/v1/dlq")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixq", description="pixq command line (talks to the HTTP API)")
    parser.add_argument("--api-url", default=os.environ.get("PIXQ_API_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--api-key", default=os.environ.get("PIXQ_API_KEY", ""))
    commands = parser.add_subparsers(dest="command", required=True)

    sub = commands.add_parser("submit", help="submit a resize, crop or pipeline job")
    sub.add_argument("kind", choices=["resize", "crop", "job"])
    sub.add_argument("file", nargs="?", help="image to upload (or use --key)")
    sub.add_argument("--key", help="storage_key of an object already in the bucket")
    for name in ("width", "height", "quality", "x", "y"):
        sub.add_argument(f"--{name}", type=int)
    for name in ("fit", "format", "gravity", "background"):
        sub.add_argument(f"--{name}")
    sub.add_argument("--enlarge", action="store_true", default=None)
    sub.add_argument("--spec", default='{"variants": [{"name": "default"}]}', help="pipeline spec JSON (job)")
    sub.add_argument("--idempotency-key")
    sub.add_argument("--wait", action="store_true", help="wait for the job to finish")
    sub.add_argument("--output", help="download the result here (implies --wait)")
    sub.add_argument("--timeout", type=float, default=300.0)

    status = commands.add_parser("status", help="show a job's status")
    status.add_argument("job_id")
    status.add_argument("--wait", action="store_true")
    status.add_argument("--timeout", type=float, default=300.0)

    dead = commands.add_parser("dlq", help="inspect and replay the dead-letter queue (admin key)")
    dead.add_argument("action", choices=["ls", "show", "replay", "purge"])
    dead.add_argument("job_id", nargs="?")
    dead.add_argument("--all", action="store_true", help="replay or purge every entry")
    dead.add_argument("--error-code", help="replay only entries with this last error code")
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument("--offset", type=int, default=0)
    return parser


async def run(args: argparse.Namespace) -> tuple[Any, int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        client = Client(session, args.api_url, args.api_key)
        if args.command == "submit":
            if bool(args.file) == bool(args.key):
                raise CliError("give an image file or --key, not both")
            result = await submit(client, args)
        elif args.command == "status":
            result = await (client.wait(args.job_id, args.timeout) if args.wait
                            else client.call("GET", f"/api/v1/jobs/{args.job_id}"))
        else:
            if args.action in ("show",) and not args.job_id:
                raise CliError("dlq show needs a JOB_ID")
            if args.action in ("replay", "purge") and not (args.job_id or args.all):
                raise CliError(f"dlq {args.action} needs a JOB_ID or --all")
            result = await dlq(client, args)
    failed = isinstance(result, dict) and result.get("status") == "failed"
    return result, 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        result, code = asyncio.run(run(args))
    except CliError as exc:
        print(f"pixq: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    print(json.dumps(result, indent=2))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
