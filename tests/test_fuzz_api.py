"""No request can produce a 500: property-based fuzzing of every route of one live API.

Each test starts ONE real API app (real nats-server and redis-server, local storage, a user
key and an admin key) and drives it with generated requests: unicode digits, huge numbers,
NaN/Infinity, negatives, empty strings, wrong JSON types, long strings, invalid UTF-8 and
surrogates, odd content types, malformed multipart and JSON bodies, odd header values,
path ids that are not UUIDs, and malformed signed download links.

Routes: POST /api/v1/resize, /crop and /jobs (multipart and JSON, every parameter of
pixq.spec), GET /api/v1/jobs (history, every query parameter) and /api/v1/jobs/{id}, every
/api/v1/dlq route and query, GET /files/{key} (local, and the S3 backend for storage keys),
/health/*, /metrics and unknown routes, with no key, a user key, an admin key and odd ones.

Two layers per test: a deterministic *sweep* puts every listed nasty value into every
parameter (one at a time, the rest of the request valid, so each value reaches the code
that reads it), then hypothesis (``derandomize=True``, no example database, bounded
``max_examples``) combines them.

Requests are written as raw HTTP/1.1 bytes on a fresh connection, so the test controls every
byte (a client library would refuse or normalise most of them). Every answer must be below
500 (no outage is simulated here, so not even a 503), and every error that reached the app
must be the one envelope ``{"error": {"code", "message"}}`` with a stable code whose HTTP
status is the one answered. Bytes that aiohttp's HTTP parser refuses before any route runs
(raw non-ASCII in the request line, a control byte in a header) answer its own plain 400;
that is checked to be exactly 400.
"""

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from hypothesis import HealthCheck, given, settings, strategies as st
from multidict import CIMultiDict
from nats.aio.client import Client as NATS

from pixq import names
from pixq.errors import HTTP_STATUS, ErrorCode
from pixq.signing import sign
from tests.conftest import running_api
from tests.helpers import make_image

USER_KEY = "user-key-fuzz"
ADMIN_KEY = "admin-key-fuzz"
EXAMPLES = 150
"""max_examples of each hypothesis property; each example is one real HTTP request."""

FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# --- Raw HTTP ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDict
    body: bytes
    request: bytes = field(repr=False, default=b"")

    def describe(self) -> str:
        head, _, body = self.request.partition(b"\r\n\r\n")
        return f"{self.status} {self.body[:300]!r} for request {head[:500]!r} + body {body[:300]!r}"


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def _parse(raw: bytes, request: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines and lines[0].startswith(b"HTTP/1."), f"no HTTP answer: {raw[:200]!r} to {request[:300]!r}"
    status = int(lines[0].split()[1])
    headers = CIMultiDict()
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers.add(name.strip(), value.strip())
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Reply(status, headers, body, request)


class Api:
    """One live API app on an event loop this test owns (hypothesis' @given is sync)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client, settings) -> None:
        self.loop = loop
        self.client = client
        self.settings = settings
        self.port = client.server.port
        self.sent = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def put_object(self, key: str, data: bytes) -> None:
        """An object in the app's local storage, as an earlier upload would have left it."""
        path = self.settings.storage_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def send_raw(self, raw: bytes) -> Reply:
        """Send one request and read the whole answer; of an event stream (SSE) answering 200
        only the head is read before closing, since it would not end by itself."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(raw)
            await writer.drain()
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            except asyncio.IncompleteReadError as short:
                head = short.partial
            if b"text/event-stream" in head.lower() and head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                data = head
            else:
                data = head + await asyncio.wait_for(reader.read(-1), 30)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return _parse(data, raw)

    def request(self, method: str | bytes, target: str | bytes, headers: list | None = None,
                body: bytes | None = None) -> Reply:
        lines = [_as_bytes(method) + b" " + _as_bytes(target) + b" HTTP/1.1",
                 b"Host: 127.0.0.1:" + str(self.port).encode(), b"Connection: close"]
        for name, value in headers or []:
            lines.append(_as_bytes(name) + b": " + _as_bytes(value))
        if body is not None:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        self.sent += 1
        return self.run(self.send_raw(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")))


@contextlib.contextmanager
def live_api(make_settings, storage_type: str = "local", **overrides):
    settings_ = make_settings(storage_type, api_keys={USER_KEY: "team-a"}, admin_api_keys={ADMIN_KEY: "ops"},
                              max_input_bytes=2_000_000, **overrides)
    loop = asyncio.new_event_loop()

    async def enter():
        manager = running_api(settings_)
        return manager, await manager.__aenter__()

    manager, client = loop.run_until_complete(enter())
    try:
        yield Api(loop, client, settings_)
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


# --- What every answer must look like ------------------------------------------------

ERROR_CODES = {code.value for code in ErrorCode}
HTTP_RANGE_STATUSES = (304, 412, 416)
"""What aiohttp's FileResponse answers (empty body) to conditional and Range headers on a
real file: HTTP's own semantics, allowed only for a correctly signed link to a real object."""


def check(reply: Reply, allow: tuple[int, ...] = ()) -> Reply:
    """Never a 5xx; every error from the app is the one envelope with a matching code/status."""
    assert reply.status < 500, reply.describe()
    if "X-Request-ID" not in reply.headers:
        # Refused by aiohttp's HTTP parser before any middleware ran: its own plain 400.
        assert reply.status == 400, reply.describe()
        return reply
    assert reply.headers["X-Request-ID"].isascii() and reply.headers["X-Request-ID"].isprintable()
    if reply.status >= 400 and reply.status not in allow and not reply.request.startswith(b"HEAD "):
        assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.describe()
        body = json.loads(reply.body)
        assert isinstance(body, dict) and set(body) == {"error"}, reply.describe()
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"code", "message"}, reply.describe()
        assert error["code"] in ERROR_CODES, reply.describe()
        assert HTTP_STATUS[ErrorCode(error["code"])] == reply.status, reply.describe()
        assert isinstance(error["message"], str) and error["message"], reply.describe()
    return reply


def check_json(reply: Reply) -> dict | list:
    check(reply)
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.describe()
    return json.loads(reply.body)


# --- Nasty values --------------------------------------------------------------------

HUGE = str(10**400)
NUMBERISH = ["0", "1", "-1", "-0", "16384", "16385", "163840", HUGE, "-" + HUGE, "1" * 5000, "1e400", "-1e400",
             "1e-400", "NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "1.5", "8.0", "0x10", "0b1", "0o7",
             "1_000", " 10 ", "10\n", "+5", "²", "٣", "١٢", "𝟠", "Ⅻ", "½", "", " ", "true", "false", "null",
             "[]", "{}", "[1]", '{"a": 1}']
WORDS = ["cover", "contain", "fill", "inside", "outside", "jpeg", "jpg", "JPEG", "png", "webp", "avif", "gif",
         "tiff", "tif", "same", "bmp", "centre", "center", "north", "attention", "entropy", "#ffffff", "#00000000",
         "ffffff", "red", "#fff", "yes", "no", "on", "off", "True", "FALSE"]
ODD = ["*", ">", ".", "..", "%2e", "%2E%2e", "/", "\\", "\x00", "\x7f", "\u202e", "😀", "é", "\ud800", "\udcff",
       "a" * 300, "a" * 5000, "pixq.jobs.>", "\r\n", "' OR 1=1 --", "${jndi:x}"]
NASTY_STRINGS = NUMBERISH + WORDS + ODD
NASTY_FIELD_BYTES = [_as_bytes(text) for text in NASTY_STRINGS] + [
    b"\xff", b"\xc3", b"\xed\xa0\x80", b"8\xff", b"\xef\xbb\xbf8", b"a" * 70_000]
JSON_ODD = [None, True, False, 0, -1, 1, 8, 16385, 10**400, -(10**400), 2**63, 1.5, 8.0, float("nan"),
            float("inf"), float("-inf"), 1e-400, "", "8", "²", "٣", "NaN", "\ud800", "a" * 5000, [], [8], {},
            {"a": 1}, [[[]]], "center", "#ffffff"]
ODD_HEADER_VALUES = ["", " ", "x", "*", "²", "٣", "a" * 300, "a" * 5000, "\ud800", "😀", "0", "-1", HUGE, "NaN",
                     "order-42", "\t", "Bearer", "Bearer ", b"\xff\xfe", b"\xed\xa0\x80", b"\xc3", b"\x80abc",
                     b"Bearer \xff", f"Bearer {USER_KEY}\xff".encode("latin-1"), "Bearer ²", "Bearer \ud800",
                     f"Basic {USER_KEY}", f"BEARER {ADMIN_KEY}", f"Bearer {ADMIN_KEY}, Bearer x"]
ODD_IDS = ["*", ">", ".", "..", "%2e", "%2E%2E", "%2f", "%00", "%ff", "%ed%a0%80", "pixq.jobs.>", "a.b", "%20",
           "not-a-job", "invalid-1", "invalid-" + "9" * 30, "invalid-%C2%B2", "%7B" + "0" * 32 + "%7D",
           "urn:uuid:12345678-1234-5678-1234-567812345678", "12345678-1234-5678-1234-56781234567%D9%A3",
           "12345678123456781234567812345678", "12345678-1234-5678-1234-567812345678".upper(),
           " 12345678-1234-5678-1234-567812345678"[1:] + "%20", "%E2%80%AE", "a" * 5000, "%C2%B2", HUGE, "-1",
           "NaN"]

# --- Strategies ----------------------------------------------------------------------

NASTY_TEXT = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(max_size=30))
NASTY_BYTES = st.one_of(st.sampled_from(NASTY_FIELD_BYTES), st.text(max_size=30).map(_as_bytes),
                        st.binary(max_size=40))

RESIZE_PARAMS = ["width", "height", "fit", "format", "quality", "enlarge", "gravity", "background", "lossless",
                 "progressive", "strip"]
CROP_PARAMS = ["x", "y", "width", "height", "gravity", "format", "quality", "background", "lossless",
               "progressive", "strip"]
STEP_OPS = ["resize", "crop", "rotate", "flip", "flop", "blur", "sharpen", "grayscale"]
STEP_KEYS = ["op", "width", "height", "fit", "enlarge", "gravity", "background", "x", "y", "angle", "sigma"]
VARIANT_KEYS = ["name", "width", "height", "fit", "enlarge", "gravity", "format", "quality", "lossless",
                "progressive", "strip", "background"]
PARAM_NAMES = sorted(set(RESIZE_PARAMS + CROP_PARAMS + STEP_KEYS + VARIANT_KEYS))
VALID_STEPS = {"resize": {"op": "resize", "width": 8}, "crop": {"op": "crop", "width": 8, "height": 8},
               "rotate": {"op": "rotate", "angle": 90}, "flip": {"op": "flip"}, "flop": {"op": "flop"},
               "blur": {"op": "blur", "sigma": 1.0}, "sharpen": {"op": "sharpen"}, "grayscale": {"op": "grayscale"}}

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(JSON_ODD),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                         st.sampled_from(NASTY_STRINGS))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _params(keys: list[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=10)), JSON_VALUES, max_size=6)


STEPS = st.builds(lambda op, rest: {"op": op, **rest}, st.one_of(st.sampled_from(STEP_OPS), JSON_SCALARS),
                  _params(STEP_KEYS))
VARIANTS = st.builds(lambda name, rest: {"name": name, **rest},
                     st.one_of(st.sampled_from(["default", "thumb", "a" * 64, "a" * 65, "-x", ""]), JSON_SCALARS),
                     _params(VARIANT_KEYS))
PIPELINE_SPEC = st.one_of(
    st.fixed_dictionaries({}, optional={"steps": st.one_of(st.lists(STEPS, max_size=12), JSON_VALUES),
                                        "variants": st.one_of(st.lists(VARIANTS, max_size=12), JSON_VALUES)}),
    _params(["steps", "variants"]), JSON_VALUES,
)

AUTH = st.sampled_from([None, f"Bearer {USER_KEY}", f"Bearer {USER_KEY}", f"Bearer {ADMIN_KEY}",
                        f"bearer {ADMIN_KEY}", f"Bearer  {USER_KEY} ", "Bearer wrong", *ODD_HEADER_VALUES])
ODD_HEADER = st.one_of(st.none(), st.none(), st.sampled_from(ODD_HEADER_VALUES),
                       st.binary(min_size=1, max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b),
                       st.text(max_size=20).filter(lambda t: "\r" not in t and "\n" not in t))
HEADERS = st.fixed_dictionaries({"Authorization": AUTH, "Idempotency-Key": ODD_HEADER,
                                 "X-Request-ID": ODD_HEADER, "Last-Event-ID": ODD_HEADER})


def header_list(values: dict, **extra) -> list:
    return [(name, value) for name, value in {**values, **extra}.items() if value is not None]


def _query_value(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


# --- Request bodies ------------------------------------------------------------------

BOUNDARY = "fuzzboundary7MA4YWxkTrZu0gW"
MULTIPART = ("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
USER = ("Authorization", f"Bearer {USER_KEY}")
ADMIN = ("Authorization", f"Bearer {ADMIN_KEY}")
JSON_TYPE = ("Content-Type", "application/json")


def multipart(parts: list[tuple[dict[str, bytes | str], bytes]], boundary: str = BOUNDARY,
              close: bool = True) -> bytes:
    out = b""
    for part_headers, content in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        for name, value in part_headers.items():
            out += _as_bytes(name) + b": " + _as_bytes(value) + b"\r\n"
        out += b"\r\n" + content + b"\r\n"
    if close:
        out += b"--" + boundary.encode() + b"--\r\n"
    return out


def field_part(name: bytes | str, value: bytes) -> tuple[dict, bytes]:
    return {"Content-Disposition": b'form-data; name="' + _as_bytes(name) + b'"'}, value


def file_part(content: bytes, content_type: str | bytes = "application/octet-stream") -> tuple[dict, bytes]:
    return {"Content-Disposition": 'form-data; name="file"; filename="in.png"', "Content-Type": content_type}, content


def form_body(fields: dict[str, bytes | str], image: bytes) -> bytes:
    return multipart([field_part(name, _as_bytes(value)) for name, value in fields.items()] + [file_part(image)])


SUBMIT_ROUTES = ["/api/v1/resize", "/api/v1/crop", "/api/v1/jobs"]
VALID_FIELDS = {"/api/v1/resize": {"width": "8"}, "/api/v1/crop": {"width": "8", "height": "8"},
                "/api/v1/jobs": {"spec": json.dumps({"variants": [{"name": "a", "width": 8}]})}}


def _mutated(image: bytes, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(image)
    for offset, value in flips:
        data[offset % len(data)] = value
    return bytes(data)


# --- The properties ------------------------------------------------------------------


def test_multipart_submits_never_fail(make_settings):
    """Every parameter of resize/crop/jobs as multipart fields, nasty values, mutated images."""
    image = make_image(48, 32, ".png")
    images = {fmt: make_image(24, 16, fmt) for fmt in (".png", ".jpg", ".gif", ".webp", ".tif", ".avif")}
    with live_api(make_settings) as api:
        # Sweep: each nasty value in each parameter, the rest of the request valid.
        for route, names_ in (("/api/v1/resize", RESIZE_PARAMS), ("/api/v1/crop", ["x", "y", "width", "gravity"])):
            for name in names_:
                for value in NASTY_FIELD_BYTES:
                    fields = {**VALID_FIELDS[route], name: value}
                    if name in ("x", "y"):
                        fields.update(x=value, y=value)
                    check(api.request("POST", route, [USER, MULTIPART], form_body(fields, image)))
        for value in NASTY_FIELD_BYTES:
            check(api.request("POST", "/api/v1/jobs", [USER, MULTIPART], form_body({"spec": value}, image)))

        uploads = {"image": image, "empty": b"", "text": b"hello, I am text" * 4, "truncated": image[:40],
                   "png-magic-only": b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "gif-junk": b"GIF89a" + b"\xff" * 20,
                   "bmp": b"BM" + b"\0" * 60, "none": None}
        field_names = st.one_of(st.sampled_from(PARAM_NAMES + ["spec", "file", ""]), st.text(max_size=10))
        spec = st.one_of(st.none(), PIPELINE_SPEC.map(lambda v: json.dumps(v).encode()), NASTY_BYTES)

        @FUZZ
        @given(route=st.sampled_from(SUBMIT_ROUTES), upload=st.sampled_from(["image", "image", *uploads]),
               fields=st.lists(st.tuples(field_names, NASTY_BYTES), max_size=6), spec=spec, headers=HEADERS,
               part_type=st.sampled_from(["image/png", "application/octet-stream", "", "text/plain; charset=x",
                                          "²/²", b"image/\xff", "a" * 300]))
        def anything(route, upload, fields, spec, headers, part_type):
            parts = [field_part(name, value) for name, value in fields if name != "file"]
            if spec is not None:
                parts.append(field_part("spec", spec))
            if uploads[upload] is not None:
                parts.append(file_part(uploads[upload], part_type))
            reply = check(api.request("POST", route, header_list(headers, **dict([MULTIPART])), multipart(parts)))
            if reply.status == 202:
                answer = json.loads(reply.body)
                assert names.is_job_id(answer["job_id"]) and reply.headers["Location"].endswith(answer["job_id"])

        good = {"width": ["8", "16", "48", "100"], "height": ["8", "16", "32"], "x": ["0", "10", "40"],
                "y": ["0", "10", "30"], "fit": ["cover", "contain", "fill", "inside", "outside"],
                "format": ["jpeg", "png", "webp", "avif", "gif", "tiff", "same", "jpg"],
                "quality": ["1", "80", "100"], "enlarge": ["true", "false"],
                "gravity": ["centre", "center", "north", "attention", "entropy"],
                "background": ["#ffffff", "00000000"], "lossless": ["true", "false"],
                "progressive": ["true", "0"], "strip": ["true", "false"]}
        mostly_valid = st.dictionaries(st.sampled_from(sorted(good)), st.one_of(
            *[st.sampled_from(values) for values in good.values()], st.sampled_from(NASTY_STRINGS)),
            min_size=1, max_size=5)

        @FUZZ
        @given(route=st.sampled_from(SUBMIT_ROUTES[:2]), params=mostly_valid, fmt=st.sampled_from(sorted(images)),
               flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
               idempotency=st.one_of(st.none(), st.sampled_from(["k1", "k2", "²", "\ud800", "k" * 255, "k" * 256])))
        def valid_looking(route, params, fmt, flips, idempotency):
            """Past auth and mostly valid, so requests reach sniffing (of mutated headers) and crop bounds."""
            check(api.request("POST", route, header_list({"Idempotency-Key": idempotency}, **dict([USER, MULTIPART])),
                              form_body(params, _mutated(images[fmt], flips))))

        anything()
        valid_looking()


def test_json_submits_never_fail(make_settings):
    """JSON submits: wrong types, huge numbers, NaN, surrogates, odd storage keys, for all three routes."""
    with live_api(make_settings) as api:
        existing = "inputs/team-a/fixture.png"
        api.put_object(existing, make_image(48, 32, ".png"))
        odd_keys = [existing, existing + "/x", "inputs/ops/other.png", "missing.jpg", "../etc/passwd", "/etc/passwd",
                    "inputs/team-a/../../x", "inputs/team-a/" + "a" * 300, "inputs/team-a/" + "a/" * 600,
                    "inputs/team-a/" + "a" * 2000, "inputs/team-a/\ud800", "inputs/team-a/\x00",
                    "inputs/team-a/%2e%2e/x", "", "*", ">", ".", "inputs\\team-a\\x", "inputs/team-a/" + "😀" * 400,
                    *JSON_ODD]

        def submit(route: str, body, auth=USER) -> Reply:
            return check(api.request("POST", route, [auth, JSON_TYPE], json.dumps(body).encode()))

        # Sweep: every key, every parameter of every model with every odd JSON value.
        for key in odd_keys:
            for auth in (USER, ADMIN):
                submit("/api/v1/resize", {"input": {"storage_key": key}, "parameters": {"width": 8}}, auth)
        base = {"input": {"storage_key": existing}}
        for value in JSON_ODD:
            for name in RESIZE_PARAMS:
                submit("/api/v1/resize", {**base, "parameters": {"width": 8, name: value}})
            for name in ("x", "y", "width"):
                submit("/api/v1/crop", {**base, "parameters": {"width": 8, "height": 8, "x": 0, "y": 0, name: value}})
            for op, step in VALID_STEPS.items():
                for name in STEP_KEYS:
                    submit("/api/v1/jobs", {**base, "parameters": {"steps": [{**step, name: value}]}})
            for name in VARIANT_KEYS:
                submit("/api/v1/jobs", {**base, "parameters": {"variants": [{"name": "v", name: value}]}})
            for name in ("steps", "variants", "parameters", "input", "spec"):
                submit("/api/v1/jobs", {**base, name: value})
                submit("/api/v1/jobs", {**base, "parameters": {name: value}})

        keys = st.one_of(st.sampled_from(odd_keys), JSON_SCALARS, NASTY_TEXT)
        bodies = st.one_of(
            st.fixed_dictionaries({"input": st.one_of(st.fixed_dictionaries({"storage_key": keys}), JSON_VALUES)},
                                  optional={"parameters": st.one_of(_params(PARAM_NAMES), PIPELINE_SPEC),
                                            "spec": PIPELINE_SPEC, "extra": JSON_VALUES}),
            JSON_VALUES,
        )

        @FUZZ
        @given(route=st.sampled_from(SUBMIT_ROUTES), body=bodies, auth=st.sampled_from([USER, ADMIN]),
               headers=HEADERS)
        def anything(route, body, auth, headers):
            reply = check(api.request("POST", route, header_list(headers, **dict([auth, JSON_TYPE])),
                                      json.dumps(body).encode()))
            if reply.status == 202:
                assert names.is_job_id(json.loads(reply.body)["job_id"])

        anything()


def test_storage_keys_and_uploads_on_s3_never_fail(make_settings):
    """The same storage keys and upload content types against the S3 backend (moto), whose client
    has its own idea of a valid object name; an odd key must not look like a storage outage."""
    image = make_image(16, 16, ".png")
    with live_api(make_settings, "minio") as api:
        assert check_json(api.request("POST", "/api/v1/resize", [USER, MULTIPART],
                                      form_body({"width": "8"}, image)))["status"] == "queued"
        keys = ["inputs/team-a/" + suffix for suffix in
                ("missing", "a" * 300, "a/" * 600, "a" * 1009, "%2e%2e/x", "😀" * 400, "x?y#z", "x y", "\u00e9",
                 "\x7fx", "..x", "x/..", "*", ">", "\ud800", "\x00")] + ["", "/", "..", "inputs//x", "x" * 1025]
        for key in keys:
            for auth in (USER, ADMIN):
                check(api.request("POST", "/api/v1/resize", [auth, JSON_TYPE],
                                  json.dumps({"input": {"storage_key": key}, "parameters": {"width": 8}}).encode()))
        for part_type in ["image/png", "", "²/²", b"image/\xff", "a" * 300, "text/plain; charset=\ud800",
                          "image/png\x7f", "multipart/mixed; boundary=x"]:
            check(api.request("POST", "/api/v1/resize", [USER, MULTIPART],
                              multipart([field_part("width", b"8"), file_part(image, part_type)])))
        check(api.request("GET", "/files/outputs/x.png?expires=4000000000&sig=00"))


MALFORMED_JSON = [b"", b" ", b"{", b"{not json", b"[]", b"null", b"1", b'"x"', b"NaN", b"{}", b'{"input": null}',
                  b'{"input": {"storage_key": "x"}, "parameters": {"width": ' + b"1" * 5000 + b"}}",
                  b'{"input": {"storage_key": "' + b"1" * 5000 + b'"}}', b"1" * 5000, b"[" * 100_000,
                  b'{"a":' * 50_000, b'{"input": {"storage_key": "\xff\xfe"}}', b"\xef\xbb\xbf{}",
                  b"\xff\xfe{\x00}\x00",
                  b'{"input": {"storage_key": "\\ud800"}, "parameters": {"width": 8}}',
                  b'{"input": {"storage_key": "x"}, "parameters": {"width": 1e400}}',
                  b'{"input": {"storage_key": "x"}, "parameters": {"width": -Infinity}}',
                  b'{"input": {"storage_key": "x"}, "parameters": {"\\ud800": 1}}',
                  b'{"input": {"storage_key": "x"}, "input": 1}', b"\x00" * 10, b"{" * 2_000_000]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
                 "application/json; charset=utf-16", "application/json; charset=nope", "application/json; charset=",
                 "application/json; charset=base64", "application/json; charset=rot13",
                 "application/json; charset=zlib",
                 "application/json; charset=undefined", 'application/json; charset="utf-8', "APPLICATION/JSON",
                 "application/json;;", "application/json\t", "multipart/form-data", "multipart/form-data; boundary=",
                 'multipart/form-data; boundary=""', "multipart/form-data; boundary=" + "b" * 200,
                 "multipart/form-data; boundary=nope", "multipart/mixed; boundary=" + BOUNDARY, "text/plain",
                 "application/x-www-form-urlencoded", "", "*/*", "image/png", "²", "application/json; charset=\ud800",
                 "application/json; charset=²", b"application/json; charset=\xff",
                 "multipart/form-data; charset=x; boundary=a", "multipart/form-data; boundary=\ud800"]


def test_malformed_bodies_never_fail(make_settings):
    """Raw bodies that are not what their Content-Type says, truncated, huge or deeply nested."""
    with live_api(make_settings) as api:
        for route in SUBMIT_ROUTES:
            for body in MALFORMED_JSON:
                for content_type in ("application/json", "application/json; charset=utf-16", MULTIPART[1]):
                    check(api.request("POST", route, [USER, ("Content-Type", content_type)], body))
            for content_type in CONTENT_TYPES:
                for body in (b'{"input": {"storage_key": "x"}}', b""):
                    check(api.request("POST", route, [USER, ("Content-Type", content_type)], body))

        @FUZZ
        @given(route=st.sampled_from(SUBMIT_ROUTES),
               body=st.one_of(st.sampled_from(MALFORMED_JSON), st.binary(max_size=200),
                              JSON_VALUES.map(lambda v: json.dumps(v).encode())),
               content_type=st.one_of(st.sampled_from(CONTENT_TYPES), st.none(), st.text(max_size=30)),
               auth=st.sampled_from([USER, ADMIN]))
        def anything(route, body, content_type, auth):
            check(api.request("POST", route, header_list({"Content-Type": content_type}, **dict([auth])), body))

        anything()


def _broken_multipart(image: bytes) -> list[bytes]:
    b = BOUNDARY.encode()
    good_file = multipart([file_part(image)], close=False)

    def with_headers(headers: dict, content: bytes, *more) -> bytes:
        return multipart([(headers, content), *more])

    width = 'form-data; name="width"'
    file = 'form-data; name="file"; filename="x"'
    return [
        b"", b"--" + b, b"--" + b + b"\r\n", b"--" + b + b"--", good_file, good_file[:-10],
        multipart([file_part(image)])[:-4],
        b"--" + b + b'\r\nContent-Disposition: form-data; name="file"\r\n' + image,  # never closed
        b"--" + b + b"\r\n\r\n" + image + b"\r\n--" + b + b"--\r\n",  # part without headers
        b"--" + b + b"\r\nContent-Disposition\r\n\r\nx\r\n--" + b + b"--\r\n",
        b"--" + b + b"\r\nno colon here\r\n\r\nx\r\n--" + b + b"--\r\n",
        b"garbage before\r\n--" + b + b'\r\nContent-Disposition: form-data; name="width"\r\n\r\n8\r\n--' + b + b"--",
        with_headers({"Content-Disposition": file, "Content-Transfer-Encoding": "base64"}, b"!!!not base64!!!"),
        with_headers({"Content-Disposition": file, "Content-Transfer-Encoding": "quoted-printable"}, b"=ZZ=\xff"),
        with_headers({"Content-Disposition": file, "Content-Transfer-Encoding": "x-nope"}, image),
        with_headers({"Content-Disposition": width, "Content-Transfer-Encoding": "x-nope"}, b"8", file_part(image)),
        with_headers({"Content-Disposition": width, "Content-Transfer-Encoding": "base64"}, b"!!", file_part(image)),
        with_headers({"Content-Disposition": width, "Content-Transfer-Encoding": "base64"}, b"OA=", file_part(image)),
        with_headers({"Content-Disposition": width, "Content-Encoding": "gzip"}, b"notgzip", file_part(image)),
        with_headers({"Content-Disposition": width, "Content-Encoding": "deflate"}, b"\x78\x9c\xff", file_part(image)),
        with_headers({"Content-Disposition": width, "Content-Encoding": "br"}, b"\xff\xff", file_part(image)),
        with_headers({"Content-Disposition": width, "Content-Encoding": "x-nope"}, b"8", file_part(image)),
        with_headers({"Content-Disposition": file, "Content-Encoding": "deflate"}, b"\x00\x01\x02",
                     field_part("width", b"8")),
        with_headers({"Content-Disposition": width, "Content-Type": "text/plain; charset=nope"}, b"8",
                     file_part(image)),
        with_headers({"Content-Disposition": width, "Content-Type": "text/plain; charset=utf-16"}, b"\xff",
                     file_part(image)),
        with_headers({"Content-Disposition": 'form-data; name="spec"', "Content-Type": "application/json; charset=x"},
                     b"{}", file_part(image)),
        with_headers({"Content-Disposition": "form-data; name*=UTF-8''%FF%FE"}, b"8", file_part(image)),
        with_headers({"Content-Disposition": "form-data; name*=nope''x"}, b"8", file_part(image)),
        with_headers({"Content-Disposition": 'form-data; name="'}, b"8", file_part(image)),
        with_headers({"Content-Disposition": "attachment; filename=x"}, image),
        with_headers({"Content-Disposition": b'form-data; name="file"; filename="\xff.png"'}, image),
        with_headers({"Content-Disposition": b'form-data; name="\xff"'}, b"8", file_part(image)),
        with_headers({"Content-Disposition": 'form-data; name="sub"', "Content-Type": "multipart/mixed; boundary=in"},
                     b"--in\r\nContent-Type: text/plain\r\n\r\nx\r\n--in--", file_part(image)),
        with_headers({"Content-Disposition": file, "Content-Type": "multipart/mixed; boundary=in"},
                     b"--in\r\n\r\nx\r\n--in--"),
        with_headers({"Content-Disposition": file, "Content-Type": "multipart/mixed"}, b"x"),
        with_headers({"Content-Disposition": file, "Content-Length": "-1"}, image),
        with_headers({"Content-Disposition": file, "Content-Length": HUGE}, image),
        with_headers({"Content-Disposition": file, "Content-Length": "²"}, image),
        with_headers({"Content-Disposition": file, "Content-Length": "3"}, image),
        with_headers({"Content-Disposition": width, "Content-Length": "99999"}, b"8", file_part(image)),
        multipart([file_part(image), file_part(image)]),
        multipart([field_part("width", b"8"), field_part("width", b"9"), file_part(image)]),
        multipart([field_part("spec", b"{" * 50_000), file_part(image)]),
        multipart([field_part("spec", b'{"variants": [{"name": "a", "width": ' + b"9" * 5000 + b"}]}"),
                   file_part(image)]),
        multipart([field_part("spec", b"[" * 3000 + b"]" * 3000), file_part(image)]),
        multipart([field_part("spec", b"\xff\xfe"), file_part(image)]),
        multipart([field_part("x" * 10_000, b"8"), file_part(image)]),
        multipart([field_part("width", b"8" * 900_000), file_part(image)]),
        with_headers({"Content-Disposition": width, "X-" + "h" * 9000: "v"}, b"8", file_part(image)),
        with_headers({"Content-Disposition": width, "Bad\x00Header": "v"}, b"8", file_part(image)),
        multipart([({f"X-{i}": "v" for i in range(200)} | {"Content-Disposition": width}, b"8"), file_part(image)]),
    ]


def test_malformed_multipart_never_fails(make_settings):
    image = make_image(16, 16, ".png")
    cases = _broken_multipart(image)
    with live_api(make_settings) as api:
        for body in cases:
            for route in SUBMIT_ROUTES:
                check(api.request("POST", route, [USER, MULTIPART], body))

        @FUZZ
        @given(route=st.sampled_from(SUBMIT_ROUTES), case=st.sampled_from(range(len(cases))),
               content_type=st.sampled_from([MULTIPART[1], f'multipart/form-data; boundary="{BOUNDARY}"',
                                             f"Multipart/Form-Data;boundary={BOUNDARY};charset=nope",
                                             "multipart/form-data; boundary=other", "multipart/form-data"]),
               cut=st.one_of(st.none(), st.integers(min_value=0, max_value=400)))
        def truncated(route, case, content_type, cut):
            body = cases[case] if cut is None else cases[case][:cut]
            check(api.request("POST", route, [USER, ("Content-Type", content_type)], body))

        truncated()


def test_headers_never_fail(make_settings):
    """Odd Authorization, Idempotency-Key, X-Request-ID, Last-Event-ID, Content-Type, Accept and
    Range values on otherwise valid requests of every kind (so a 202 path sees them too)."""
    image = make_image(16, 16, ".png")
    with live_api(make_settings) as api:
        job_id = check_json(api.request("POST", "/api/v1/resize", [USER, MULTIPART],
                                        form_body({"width": "8"}, image)))["job_id"]
        key = "outputs/team-a/fixture/default.png"
        api.put_object(key, image)
        link = f"/files/{key}?expires=4000000000&sig={sign(api.settings.signing_key(), key, 4_000_000_000)}"
        targets = [("POST", "/api/v1/resize", [USER, MULTIPART], form_body({"width": "8"}, image)),
                   ("POST", "/api/v1/jobs", [USER, JSON_TYPE],
                    json.dumps({"input": {"storage_key": "inputs/team-a/x"}, "parameters": {}}).encode()),
                   ("GET", f"/api/v1/jobs/{job_id}", [USER], None), ("GET", "/api/v1/dlq", [ADMIN], None),
                   ("GET", link, [], None), ("GET", "/health/live", [], None), ("GET", "/metrics", [], None)]
        for name in ("Authorization", "Idempotency-Key", "X-Request-ID", "Last-Event-ID", "Content-Type", "Accept",
                     "Range", "If-None-Match", "Accept-Encoding"):
            for value in ODD_HEADER_VALUES:
                for method, target, headers, body in targets:
                    headers = [(n, v) for n, v in headers if n != name] + [(name, value)]
                    check(api.request(method, target, headers, body), allow=HTTP_RANGE_STATUSES)

        @FUZZ
        @given(target=st.sampled_from(range(len(targets))), headers=HEADERS,
               content_type=st.one_of(st.none(), st.sampled_from(CONTENT_TYPES)))
        def anything(target, headers, content_type):
            method, path, base, body = targets[target]
            base = dict(base)
            if headers["Authorization"] is None:
                headers = {**headers, "Authorization": base.get("Authorization")}
            if content_type is not None:
                base["Content-Type"] = content_type
            check(api.request(method, path, header_list({**base, **headers}), body), allow=HTTP_RANGE_STATUSES)

        anything()


PATH_IDS = st.one_of(st.sampled_from(ODD_IDS), st.uuids().map(str),
                     st.text(min_size=1, max_size=30).map(lambda t: quote(t, safe="", errors="surrogatepass")))


HISTORY_QUERY_NAMES = ["limit", "cursor", "status", "type", "created_after", "created_before", "tenant"]
TIMESTAMPS = ["2026-01-01T00:00:00.000Z", "2026-01-01", "2026-01-01T00:00:00", "0001-01-01T00:00:00+14:00",
              "9999-12-31T23:59:59.999999-23:59", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00+99:00", "Z", "ZZ",
              "1970-01-01T00:00:00Z", "2026-01-01T00:00:00.000Z\x00", "+275760-09-13T00:00:00Z", "-1"]


def test_job_status_and_history_never_fail(make_settings):
    """GET /api/v1/jobs/{id} with ids that are not UUIDs, and the history's every query parameter."""
    with live_api(make_settings) as api:
        owned = [check_json(api.request("POST", "/api/v1/resize", [USER, MULTIPART],
                                        form_body({"width": "8"}, make_image(16, 16, ".png"))))["job_id"]
                 for _ in range(3)]
        cursor = check_json(api.request("GET", "/api/v1/jobs?limit=1", [USER]))["next_cursor"]
        assert cursor
        for job_id in ODD_IDS + [owned[0], owned[0].upper(), owned[0] + "%00", str(uuid.uuid4())]:
            for auth in (USER, ADMIN, ("Authorization", "Bearer x")):
                check(api.request("GET", f"/api/v1/jobs/{job_id}", [auth]))
        specials = TIMESTAMPS + [cursor, cursor[:-1], cursor + "A", cursor + "=", cursor.upper(), "team-a", "ops",
                                 "default", "queued", "completed", "resize", "pipeline"]
        for name in HISTORY_QUERY_NAMES:
            for value in NASTY_STRINGS + specials:
                for auth in (USER, ADMIN):
                    reply = check(api.request("GET", f"/api/v1/jobs?{name}={_query_value(value)}", [auth]))
                    if reply.status == 200:
                        assert isinstance(check_json(reply)["items"], list)

        @FUZZ
        @given(values=st.dictionaries(st.sampled_from(HISTORY_QUERY_NAMES),
                                      st.one_of(st.sampled_from(specials), NASTY_TEXT), max_size=5),
               auth=st.sampled_from([USER, ADMIN]))
        def history(values, auth):
            query = "&".join(f"{name}={_query_value(value)}" for name, value in values.items())
            check(api.request("GET", f"/api/v1/jobs?{query}", [auth]))

        history()
        owned = owned[0]

        @FUZZ
        @given(job_id=st.one_of(PATH_IDS, st.just(owned)), headers=HEADERS,
               method=st.sampled_from(["GET", "GET", "HEAD", "POST", "DELETE", "PUT", "OPTIONS"]),
               query=st.one_of(st.just(""), NASTY_TEXT.map(lambda t: "?q=" + _query_value(t))))
        def anything(job_id, headers, method, query):
            reply = check(api.request(method, f"/api/v1/jobs/{job_id}{query}", header_list(headers)))
            if reply.status == 200 and method == "GET":
                assert json.loads(reply.body)["job_id"] == owned

        anything()


async def _seed_dlq(settings) -> list[str]:
    """A replayable dead job and a quarantined non-job, as the worker writes them."""
    nc = NATS()
    await nc.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        job_id = str(uuid.uuid4())
        message = {"job_id": job_id, "type": "resize", "tenant": "team-a", "parameters": {"width": 8},
                   "input": {"storage_key": "inputs/team-a/missing"},
                   "metadata": {"created_at": "2026-01-01T00:00:00.000Z", "request_id": "r", "generation": 0}}
        entries = [{"job_id": job_id, "type": "resize", "tenant": "team-a", "message": message,
                    "error_code": "INPUT_NOT_FOUND", "error": "gone", "attempts": 3, "reason": "x",
                    "dead_lettered_at": "2026-01-01T00:00:00.000Z"},
                   {"job_id": "invalid-7", "type": None, "tenant": None, "message": {"raw": "\ud800 not a job"},
                    "error_code": "INVALID_REQUEST", "error": "junk", "attempts": 1, "reason": "y",
                    "dead_lettered_at": "2026-01-01T00:00:00.000Z"}]
        for entry in entries:
            await js.publish(names.dlq_subject(entry["job_id"]), json.dumps(entry).encode(), stream=names.DLQ_STREAM)
        return [entry["job_id"] for entry in entries]
    finally:
        await nc.close()


DLQ_QUERY_NAMES = ["limit", "offset", "error_code", "type"]


def _dlq_call(route: str, job_id: str) -> tuple[str, str]:
    return {"list": ("GET", "/api/v1/dlq"), "replay_many": ("POST", "/api/v1/dlq/replay"),
            "purge_all": ("DELETE", "/api/v1/dlq"), "show": ("GET", f"/api/v1/dlq/{job_id}"),
            "replay_one": ("POST", f"/api/v1/dlq/{job_id}/replay"),
            "purge_one": ("DELETE", f"/api/v1/dlq/{job_id}")}[route]


def test_dlq_routes_never_fail(make_settings):
    with live_api(make_settings) as api:
        seeded = api.run(_seed_dlq(api.settings))
        for name in DLQ_QUERY_NAMES + ["limit[]", ""]:
            for value in NASTY_STRINGS:
                for path in ("/api/v1/dlq", "/api/v1/dlq/replay"):
                    reply = check(api.request("GET" if path == "/api/v1/dlq" else "POST",
                                              f"{path}?{name}={_query_value(value)}", [ADMIN]))
                    if reply.status < 300:
                        check_json(reply)
        for job_id in ODD_IDS + seeded:
            for route in ("show", "replay_one", "purge_one"):
                for auth in (ADMIN, USER):
                    check(api.request(*_dlq_call(route, job_id), [auth]))
        seeded = api.run(_seed_dlq(api.settings))

        query = st.dictionaries(st.sampled_from(DLQ_QUERY_NAMES + ["x", "limit[]"]),
                                st.one_of(NASTY_TEXT, st.sampled_from(["50", "500", "501", "0", "INPUT_NOT_FOUND",
                                                                       "resize"])), max_size=4)

        def encode_query(values: dict, how: str) -> str:
            if not values:
                return ""
            if how == "raw":  # unescaped, as a careless client sends them (non-ASCII: aiohttp's own 400)
                return "?" + "&".join(f"{k}={v}" for k, v in values.items() if not set(v) & set(" #\r\n\t\x00"))
            return "?" + "&".join(f"{k}={_query_value(v)}" for k, v in values.items())

        @FUZZ
        @given(route=st.sampled_from(["list", "replay_many", "purge_all", "show", "replay_one", "purge_one"]),
               job_id=st.one_of(PATH_IDS, st.sampled_from(seeded)), values=query, how=st.sampled_from(["quote", "raw"]),
               auth=st.sampled_from([f"Bearer {ADMIN_KEY}", f"Bearer {ADMIN_KEY}", f"Bearer {USER_KEY}", None]),
               headers=HEADERS)
        def anything(route, job_id, values, how, auth, headers):
            method, path = _dlq_call(route, job_id)
            reply = check(api.request(method, path + encode_query(values, how),
                                      header_list(headers, Authorization=auth)))
            if reply.status < 300:
                check_json(reply)

        anything()


def test_signed_downloads_never_fail(make_settings):
    """/files/{key}?expires=&sig= with malformed links, and correctly signed links to odd keys."""
    with live_api(make_settings) as api:
        real_key = "outputs/team-a/fixture/default.png"
        api.put_object(real_key, make_image(16, 16, ".png"))
        signing_key = api.settings.signing_key()
        future = 4_000_000_000

        def link(key: str, expires: str | None, sig: str | None) -> str:
            query = [f"{name}={_query_value(value)}" for name, value in (("expires", expires), ("sig", sig))
                     if value is not None]
            return f"/files/{key}?{'&'.join(query)}"

        def signed(key: str) -> str:
            digest = sign(signing_key, unquote(key, errors="surrogateescape"), future)
            return link(key, str(future), digest)

        odd_keys = [real_key, "outputs/x.jpg", "..", "../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "a" * 300,
                    "a/" * 2100, "outputs/team-a/fixture/", "outputs/team-a/fixture", "*", ">", ".", "%00", "x%00y",
                    "%ff", "%ed%a0%80", "%C2%B2", "outputs/team-a/" + "b" * 255 + "c", "outputs//x", "%5C..%5Cx",
                    real_key + "/x", real_key + "%00"]
        sig = sign(signing_key, real_key, future)
        for value in NASTY_STRINGS + ["9" * 5000, "٣٣٣٣٣٣٣٣٣٣", " 4000000000", "+4000000000", "4000000000.0"]:
            check(api.request("GET", link(real_key, value, sig)))
            check(api.request("GET", link(real_key, str(future), value)))
            check(api.request("GET", link(real_key, value, value)))
        for key in odd_keys:
            check(api.request("GET", signed(key)))
            check(api.request("GET", link(key, str(future), "0" * 64)))

        @FUZZ
        @given(key=st.one_of(st.sampled_from(odd_keys),
                             st.text(min_size=1, max_size=30).map(
                                 lambda t: quote(t, safe="/", errors="surrogatepass"))),
               expires=st.one_of(st.none(), st.just(str(future)), NASTY_TEXT), sig=st.one_of(st.none(), NASTY_TEXT),
               is_signed=st.booleans(), headers=HEADERS,
               range_=st.one_of(st.none(), st.sampled_from(["bytes=0-1", "bytes=1-0", "bytes=-1", "bytes=999999-",
                                                            "bytes=x-y", "bytes=" + HUGE + "-", "bytes=0-1,2-3",
                                                            "items=0-1", "bytes=²-", "", "bytes=-0"])),
               conditional=st.sampled_from([None, ("If-None-Match", "*"), ("If-Modified-Since", "nope"),
                                            ("If-Match", '"x"'),
                                            ("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT"),
                                            ("If-Range", "²")]))
        def anything(key, expires, sig, is_signed, headers, range_, conditional):
            extra = {"Range": range_}
            if conditional:
                extra[conditional[0]] = conditional[1]
            target = signed(key) if is_signed else link(key, expires, sig)
            reply = check(api.request("GET", target, header_list(headers, **extra)), allow=HTTP_RANGE_STATUSES)
            if reply.status in HTTP_RANGE_STATUSES:
                assert key == real_key and is_signed, reply.describe()

        anything()
        reply = check(api.request("GET", signed(real_key)))
        assert reply.status == 200 and reply.body.startswith(b"\x89PNG")


def test_probes_metrics_and_unknown_routes_never_fail(make_settings):
    paths = ["/health/live", "/health/ready", "/metrics", "/health/", "/health/%2e", "/api/v1", "/api/v1/",
             "/api/v1/%2e%2e/metrics", "/api/v1/dlq/", "/api/v1//dlq", "/api/v1/dlq/%2e", "/API/V1/DLQ", "/files/",
             "/files", "/", "//", "/%ff", "/*", "*", "/api/v1/jobs", "/api/v1/jobs/", "/api/v1/resize/",
             "/api/v1/jobs/%2e%2e/dlq", "/api/v1/./dlq", "/api/v1/jobs/../dlq", "/api/v1/%64lq"]
    methods = ["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "TRACE", "FOO", "CONNECT"]
    with live_api(make_settings) as api:
        for path in paths:
            for method in methods:
                for auth in (USER, ("Authorization", "Bearer x")):
                    check(api.request(method, path, [auth]))

        @FUZZ
        @given(path=st.one_of(st.sampled_from(paths),
                              st.text(max_size=20).map(lambda t: "/" + quote(t, safe="/", errors="surrogatepass"))),
               method=st.sampled_from(methods),
               query=st.one_of(st.just(""), NASTY_TEXT.map(
                   lambda t: "?" + quote(t, safe="=&", errors="surrogatepass"))),
               headers=HEADERS,
               accept=st.sampled_from([None, "*/*", "application/openmetrics-text; version=1.0.0", "²",
                                       "text/plain;q=NaN"]))
        def anything(path, method, query, headers, accept):
            target = path + query if path != "*" else path
            reply = check(api.request(method, target, header_list(headers, Accept=accept)))
            if path == "/health/ready" and method == "GET":
                assert reply.status == 200, reply.describe()  # everything is up here

        anything()


def test_raw_bytes_in_request_line_and_headers(make_settings):
    """Bytes a client library would refuse: invalid UTF-8 and control bytes in the path, the query
    and every header pixq reads."""
    raw_targets = [b"/api/v1/jobs/\xff", b"/api/v1/dlq/\xed\xa0\x80", b"/files/\xff?expires=\xff&sig=\xfe",
                   b"/api/v1/dlq?limit=\xc2\xb2", b"/api/v1/dlq?limit=%C2%B2", b"/api/v1/dlq?offset=\xff",
                   b"/api/v1/dlq?error_code=\xff&type=%ff", b"/health/live?\xff", b"/metrics?%", b"/api/v1/jobs/%",
                   b"/api/v1/jobs/%zz", b"/files/%", b"/files/a%2Fb?expires=1&sig=%", b"/api/v1/jobs/\x00",
                   b"/api/v1/dlq?limit=" + HUGE.encode(), b"/api/v1/dlq?limit=1&limit=2", b"/api/v1/dlq?=&&=",
                   b"/api/v1/dlq?limit", b"/files/x?expires&sig", b"/api/v1/jobs/%ed%a0%80", b"/api/v1/dlq/%ff/replay"]
    with live_api(make_settings) as api:
        for target in raw_targets:
            for method in ("GET", "POST", "DELETE"):
                check(api.request(method, target, [ADMIN]))

        @FUZZ
        @given(method=st.sampled_from(["GET", "POST", "DELETE"]),
               target=st.one_of(st.sampled_from(raw_targets), st.binary(max_size=20).map(
                   lambda b: b"/api/v1/jobs/" + b.replace(b" ", b"").replace(b"\r", b"").replace(b"\n", b""))),
               headers=st.lists(st.tuples(st.sampled_from(["Authorization", "Idempotency-Key", "X-Request-ID",
                                                           "Content-Type", "Last-Event-ID", "Accept", "Range",
                                                           "Transfer-Encoding", "Content-Encoding"]),
                                          st.binary(max_size=30).map(
                                              lambda b: b.replace(b"\r", b"").replace(b"\n", b""))),
                                max_size=4),
               body=st.one_of(st.none(), st.binary(max_size=50)), auth=st.sampled_from([USER, ADMIN, None]))
        def anything(method, target, headers, body, auth):
            check(api.request(method, target, [auth, *headers] if auth else headers, body))

        anything()
