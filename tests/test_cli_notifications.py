"""The CLI's notification side: `pixq watch`, `--wait` over SSE (and its polling fallback),
`pixq ls` through history pages, and `pixq submit DIR` as batches with a progress bar.

The SSE parser and reconnects are driven by a tiny SSE server started here (drops, CRLF,
multi-line data, heartbeats); everything else runs against the real API and workers, the CLI
called in-process (pixq.cli.amain) or as the installed `pixq` program."""

import asyncio
import json
import time
from pathlib import Path

import pytest
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestServer

import pixq.cli as cli
from pixq.client import StreamPolicy
from pixq.client.sse import DEFAULT_STREAM_POLICY
from pixq.storage import make_storage
from tests.conftest import running_api, running_worker
from tests.helpers import make_image
from tests.stack import BIN

JOB_ID = "0b7c1d2e-3f40-4a5b-8c6d-7e8f9a0b1c2d"


def envelope(status: str, position: list[int]) -> dict:
    return {"type": f"job.{status}", "timestamp": "2030-01-01T00:00:00Z", "tenant": "default",
            "position": position, "data": {"job_id": JOB_ID, "status": status, "attempts": position[1]}}


def lines(text: str) -> list[dict]:
    """The CLI's JSON lines (in-process, the API's and worker's log lines share stdout)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def document(text: str) -> dict:
    """The CLI's one indented JSON document among log lines."""
    rows = text.splitlines()
    start = rows.index("{")
    return json.loads("\n".join(rows[start:rows.index("}", start) + 1]))


async def sse_server(handler) -> TestServer:
    app = web.Application()
    app.router.add_get(f"/api/v1/jobs/{JOB_ID}/events", handler)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.mark.parametrize("final", ["completed", "failed"])
async def test_watch_resumes_a_dropped_stream_with_last_event_id(final: str, capsys):
    resumed_from: list[str | None] = []

    async def events(request: web.Request) -> web.StreamResponse:
        resumed_from.append(request.headers.get("Last-Event-ID"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if len(resumed_from) == 1:
            queued, processing = json.dumps(envelope("queued", [0, 0, 0])), envelope("processing", [0, 1, 1])
            text = json.dumps(processing, indent=1).replace("\n", "\r\ndata: ")  # one JSON over several lines
            await response.write(f": connected\n\nretry: 1000\nid: 5\nevent: job.queued\ndata: {queued}\n\n"
                                 f": heartbeat\n\nid: 6\r\nevent: job.processing\r\ndata: {text}\r\n\r\n"
                                 f"id: 7\nevent: job.{final}\ndata: {{\"cut\": ".encode())
            request.transport.abort()  # the connection drops in the middle of an event
            return response
        await response.write(f"id: 7\nevent: job.{final}\ndata: {json.dumps(envelope(final, [0, 1, 3]))}\n\n"
                             .encode())
        return response

    server = await sse_server(events)
    try:
        code = await cli.amain(["--api-url", str(server.make_url("")), "watch", JOB_ID])
    finally:
        await server.close()
    out = capsys.readouterr().out
    assert resumed_from == [None, "6"]
    assert lines(out) == [envelope("queued", [0, 0, 0]), envelope("processing", [0, 1, 1]),
                          envelope(final, [0, 1, 3])]
    assert code == (0 if final == "completed" else 1)


async def test_watch_gives_up_after_bounded_reconnects(capsys, monkeypatch):
    monkeypatch.setattr("pixq.client.sse.DEFAULT_STREAM_POLICY", StreamPolicy(base_delay=0.01, max_delay=0.01))
    attempts = []

    async def events(request: web.Request) -> web.StreamResponse:
        attempts.append(request.headers.get("Last-Event-ID"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"id: 1\nevent: job.queued\ndata: {json.dumps(envelope('queued', [0, 0, 0]))}\n\n"
                             .encode())
        return response  # ends the stream before any terminal event, every time

    server = await sse_server(events)
    try:
        code = await cli.amain(["--api-url", str(server.make_url("")), "watch", JOB_ID])
    finally:
        await server.close()
    # A stream that ends without anything new is retried a bounded number of times, and the
    # event it sends again each time is shown once.
    captured = capsys.readouterr()
    assert code == 2 and "lost the event stream" in captured.err
    assert lines(captured.out) == [envelope("queued", [0, 0, 0])]
    assert attempts == [None] + ["1"] * DEFAULT_STREAM_POLICY.reconnects


async def test_wait_and_watch_poll_a_server_without_sse(capsys):
    polls = []

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "NOT_FOUND", "message": "no route"}}, status=404)

    async def job(request: web.Request) -> web.Response:
        polls.append(1)
        status = "completed" if len(polls) >= 3 else "queued"
        return web.json_response({"job_id": JOB_ID, "status": status, "attempts": 1 if len(polls) >= 3 else 0,
                                  "result": None})

    app = web.Application()
    app.router.add_get(f"/api/v1/jobs/{JOB_ID}/events", missing)
    app.router.add_get(f"/api/v1/jobs/{JOB_ID}", job)
    server = TestServer(app)
    await server.start_server()
    try:
        url = str(server.make_url(""))
        assert await cli.amain(["--api-url", url, "watch", JOB_ID]) == 0
        watched = lines(capsys.readouterr().out)
        assert [line["type"] for line in watched] == ["job.queued", "job.completed"]
        assert await cli.amain(["--api-url", url, "status", JOB_ID, "--wait"]) == 0
        assert document(capsys.readouterr().out)["status"] == "completed"
    finally:
        await server.close()


async def put_object(settings, key: str, data: bytes) -> None:
    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes(key, data, "application/octet-stream")


async def test_watch_and_wait_follow_the_real_event_stream(make_settings, tmp_path: Path, capsys):
    settings = make_settings("local")
    await put_object(settings, "uploads/a.jpg", make_image(64, 48))
    async with running_api(settings) as api:
        url = str(api.make_url(""))
        response = await api.post("/api/v1/crop", json={"input": {"storage_key": "uploads/a.jpg"},
                                                        "parameters": {"x": 0, "y": 0, "width": 500, "height": 9}})
        failing = (await response.json())["job_id"]
        response = await api.post("/api/v1/resize", json={"input": {"storage_key": "uploads/a.jpg"},
                                                          "parameters": {"width": 32}})
        working = (await response.json())["job_id"]
        watchers = [asyncio.create_task(cli.amain(["--api-url", url, "watch", job_id]))
                    for job_id in (working, failing)]
        printed = ""
        deadline = time.monotonic() + 15
        while printed.count("job.queued") < 2:  # both watchers show their job's current status first
            assert time.monotonic() < deadline, printed
            await asyncio.sleep(0.02)
            printed += capsys.readouterr().out
        async with running_worker(settings):
            codes = await asyncio.gather(*watchers)
            assert codes == [0, 1]
            events = lines(printed + capsys.readouterr().out)
            by_job = {job_id: [e for e in events if e["data"]["job_id"] == job_id] for job_id in (working, failing)}
            for job_id, last in ((working, "job.completed"), (failing, "job.failed")):
                types = [event["type"] for event in by_job[job_id]]
                assert types[0] == "job.queued" and types[-1] == last and types.count(last) == 1, types
                assert all("position" in event for event in by_job[job_id])  # SSE envelopes, not polls
            assert by_job[failing][-1]["data"]["error_code"] == "CROP_OUT_OF_BOUNDS"
            assert by_job[working][-1]["data"]["result"]["url"]

            source = tmp_path / "photo.png"
            source.write_bytes(make_image(80, 60, ".png"))
            out = tmp_path / "small.png"
            code = await cli.amain(["--api-url", url, "submit", "resize", str(source), "--width", "40",
                                    "--output", str(out)])
            assert code == 0, capsys.readouterr().err
            assert document(capsys.readouterr().out)["status"] == "completed"
            assert pyvips.Image.new_from_file(str(out)).width == 40


async def test_ls_pages_through_history(make_settings, capsys, monkeypatch):
    settings = make_settings("local")
    await put_object(settings, "uploads/a.jpg", make_image(32, 32))
    async with running_api(settings) as api:
        url = str(api.make_url(""))
        submitted = []
        for index in range(7):
            kind, parameters = ("crop", {"x": 0, "y": 0, "width": 8, "height": 8}) if index % 3 == 0 else \
                ("resize", {"width": 8})
            response = await api.post(f"/api/v1/{kind}", json={"input": {"storage_key": "uploads/a.jpg"},
                                                               "parameters": parameters})
            submitted.append((await response.json())["job_id"])
        newest_first = submitted[::-1]

        assert await cli.amain(["--api-url", url, "ls", "--limit", "3"]) == 0
        captured = capsys.readouterr()
        assert [job["job_id"] for job in lines(captured.out)] == newest_first[:3]
        cursor = captured.err.split("--cursor ")[1].strip()
        assert await cli.amain(["--api-url", url, "ls", "--limit", "3", "--cursor", cursor]) == 0
        assert [job["job_id"] for job in lines(capsys.readouterr().out)] == newest_first[3:6]

        monkeypatch.setattr(cli, "LIST_PAGE_MAX", 2)  # --all follows every cursor to the end
        assert await cli.amain(["--api-url", url, "ls", "--all"]) == 0
        captured = capsys.readouterr()
        assert [job["job_id"] for job in lines(captured.out)] == newest_first and captured.err == ""
        assert await cli.amain(["--api-url", url, "ls", "--all", "--type", "crop", "--status", "queued"]) == 0
        assert [job["job_id"] for job in lines(capsys.readouterr().out)] == [submitted[6], submitted[3], submitted[0]]
        assert await cli.amain(["--api-url", url, "ls", "--all", "--status", "completed"]) == 0
        assert lines(capsys.readouterr().out) == []


def photo_dir(root: Path) -> Path:
    root.mkdir()
    for name, (width, height) in {"a.jpg": (64, 48), "b.jpg": (80, 40), "c.png": (40, 40), "e.webp": (30, 60)}.items():
        (root / name).write_bytes(make_image(width, height, Path(name).suffix))
    (root / "broken.png").write_bytes(b"not really a png " * 10)  # refused at submit
    truncated = make_image(200, 100)
    (root / "d.jpg").write_bytes(truncated[:len(truncated) * 2 // 3])  # a valid header, no end: fails at the worker
    (root / "notes.txt").write_text("not an image: skipped")
    (root / "sub").mkdir()
    (root / "sub" / "deep.jpg").write_bytes(make_image(50, 50))
    return root


async def test_submit_directory_as_batches_with_progress(make_settings, tmp_path: Path, capsys):
    settings = make_settings("local")
    photos = photo_dir(tmp_path / "photos")
    out = tmp_path / "thumbs"
    async with running_api(settings) as api, running_worker(settings):
        url = str(api.make_url(""))
        code = await cli.amain(["--api-url", url, "submit", "resize", str(photos), "--width", "20", "--format", "png",
                                "--batch-size", "4", "--output", str(out)])
        captured = capsys.readouterr()
        assert code == 1, captured.err  # one job failed, one file was refused
        printed = lines(captured.out)
        batches, files = printed[:2], printed[2:]
        assert [(b["files"], b["accepted"], b["refused"]) for b in batches] == [(4, 3, 1), (2, 2, 0)]
        by_file = {line["file"]: line for line in files}
        assert list(by_file) == ["a.jpg", "b.jpg", "broken.png", "c.png", "d.jpg", "e.webp"]  # sorted, no sub/
        assert by_file["broken.png"]["status"] == "refused"
        assert by_file["broken.png"]["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        assert by_file["d.jpg"]["status"] == "failed" and by_file["d.jpg"]["error_code"]
        for name, height in (("a.jpg", 15), ("b.jpg", 10), ("c.png", 20), ("e.webp", 40)):
            assert by_file[name]["status"] == "completed"
            assert by_file[name]["outputs"] == [str(out / f"{Path(name).stem}.png")]
            image = pyvips.Image.new_from_file(by_file[name]["outputs"][0])
            assert (image.width, image.height) == (20, height)
        assert "6 files in 2 batches: 4 completed, 1 failed, 1 refused" in captured.err
        for batch in batches:
            done = await (await api.get(f"/api/v1/batches/{batch['batch_id']}")).json()
            assert done["status"] == "completed"

        # The same command again replays every job (same keys): no new job, same ids; the
        # installed program, a non-terminal stderr: the progress bar does not break it.
        before = (await (await api.get("/api/v1/jobs?limit=100")).json())["items"]
        process = await asyncio.create_subprocess_exec(
            str(BIN / "pixq"), "--api-url", url, "submit", "resize", str(photos), "--width", "20", "--format", "png",
            "--batch-size", "4", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 1, stderr.decode()
        again = {line["file"]: line for line in lines(stdout.decode()) if "file" in line}
        assert {f: line.get("job_id") for f, line in again.items()} == {f: line.get("job_id")
                                                                        for f, line in by_file.items()}
        after = (await (await api.get("/api/v1/jobs?limit=100")).json())["items"]
        assert len(after) == len(before) == 5

        # Other parameters are other jobs; --recursive takes subdirectories in; --no-wait returns at once.
        code = await cli.amain(["--api-url", url, "submit", "resize", str(photos), "--width", "10", "--recursive",
                                "--no-wait"])
        printed = lines(capsys.readouterr().out)
        assert code == 1 and printed[0]["files"] == 7 and printed[0]["accepted"] == 6
        assert {line["file"] for line in printed[1:]} >= {"sub/deep.jpg"}
        new_ids = {line["job_id"] for line in printed[1:] if "job_id" in line}
        assert len(new_ids) == 6 and not new_ids & {line["job_id"] for line in files if "job_id" in line}

        assert await cli.amain(["--api-url", url, "submit", "resize", str(tmp_path / "thumbs" / "none"),
                                "--width", "5"]) == 2
        empty = tmp_path / "empty"
        empty.mkdir()
        assert await cli.amain(["--api-url", url, "submit", "resize", str(empty), "--width", "5"]) == 2
        assert "no image files" in capsys.readouterr().err


async def test_batch_progress_is_driven_by_events_not_polling(make_settings, monkeypatch):
    from pixq import cli_follow
    from pixq.client import AsyncClient

    # With polls this slow, only the tenant's event stream can make the follow notice completion.
    monkeypatch.setattr(cli_follow, "SAFETY_POLL_SECONDS", 300.0)
    monkeypatch.setattr(cli_follow, "BATCH_POLL_SECONDS", 300.0)
    settings = make_settings("local")
    await put_object(settings, "uploads/a.png", make_image(16, 16, ".png"))
    async with running_api(settings) as api:
        jobs = [{"type": "resize", "input": {"storage_key": "uploads/a.png"}, "parameters": {"width": 4 + i}}
                for i in range(6)]
        batch_id = (await (await api.post("/api/v1/jobs/batch", json={"jobs": jobs})).json())["batch_id"]
        updates: list[int] = []
        first = asyncio.Event()

        def on_update(documents: dict) -> None:
            updates.append(documents[batch_id].counts["completed"])
            first.set()

        async with AsyncClient(str(api.make_url(""))) as client:
            follow = asyncio.create_task(cli_follow.follow_batches(client, [batch_id], on_update))
            await asyncio.wait_for(first.wait(), 10)
            assert updates == [0]  # no worker yet
            async with running_worker(settings):
                documents = await asyncio.wait_for(follow, 30)
    assert documents[batch_id].counts["completed"] == 6
    assert updates[-1] == 6 and len(updates) <= 1 + 6  # a GET round per burst of events, at most one per job
