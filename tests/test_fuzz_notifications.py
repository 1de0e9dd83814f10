"""No request to the notification routes can produce a 500 (the method of tests/test_fuzz_api.py).

Routes: the two SSE streams (every query parameter, Last-Event-ID, access_token), the
stream-token route, long-poll (``?wait=`` with If-None-Match), batches (JSON and multipart
bodies with nasty items), a batch's progress, and both deliveries routes, with no key, a user
key, an admin key and odd ones. One live API app, real nats-server and redis-server, no worker.
"""

import json
import uuid

from hypothesis import given, strategies as st

from tests.helpers import make_image
from tests.test_fuzz_api import (ADMIN, AUTH, FUZZ, HEADERS, JSON_TYPE, JSON_VALUES, MULTIPART, NASTY_STRINGS,
                                 NASTY_TEXT, ODD_HEADER_VALUES, ODD_IDS, PATH_IDS, USER, _params, _query_value,
                                 check, check_json, field_part, file_part, form_body, header_list, live_api,
                                 multipart)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STREAM_QUERY_NAMES = ["status", "type", "tenant", "last_event_id", "access_token"]
STREAM_SPECIALS = ["queued", "completed,failed", "resize", "pipeline,crop", "team-a", "ops", "default", "0", "1",
                   "18446744073709551616", "-1", "v1.", "v1.a.b", "v1..", "."]
SHORT_WAITS = ["0", "0s", "100ms", "0.1s", "0.05"]
"""Waits a matching If-None-Match may combine with (a longer one would hold the request)."""
ITEM_TYPES = st.one_of(st.sampled_from(["resize", "crop", "pipeline"]), st.sampled_from(NASTY_STRINGS))
ITEMS = st.fixed_dictionaries(
    {"type": ITEM_TYPES},
    optional={"input": st.one_of(st.fixed_dictionaries({"storage_key": st.one_of(
                  st.sampled_from(["inputs/team-a/x.png", "inputs/ops/x.png"]), NASTY_TEXT)}),
                  st.fixed_dictionaries({"part": NASTY_TEXT}), JSON_VALUES),
              "parameters": st.one_of(_params(["width", "height", "x", "y", "fit", "format"]), JSON_VALUES),
              "spec": JSON_VALUES, "idempotency_key": st.one_of(NASTY_TEXT, JSON_VALUES),
              "callback_url": st.one_of(st.sampled_from(["https://hooks.example/x", "http://127.0.0.1/x",
                                                         "https://u:p@hooks.example/", "ftp://x/"]),
                                        NASTY_TEXT, JSON_VALUES)})
BATCHES = st.one_of(st.fixed_dictionaries({"jobs": st.lists(ITEMS, max_size=4)},
                                          optional={"callback_url": st.one_of(NASTY_TEXT, JSON_VALUES)}),
                    JSON_VALUES)


def test_streams_tokens_and_long_poll_never_fail(make_settings):
    with live_api(make_settings, webhook_secrets=SECRET) as api:
        owned = check_json(api.request("POST", "/api/v1/resize", [USER, MULTIPART],
                                       form_body({"width": "8"}, make_image(16, 16, ".png"))))["job_id"]
        token = check_json(api.request("POST", "/api/v1/events/token", [USER, JSON_TYPE],
                                       json.dumps({"job_id": owned}).encode()))["token"]
        other = str(uuid.uuid4())
        routes = ["/api/v1/events", f"/api/v1/jobs/{owned}/events", f"/api/v1/jobs/{other}/events"]
        # Sweep: every nasty value in every query parameter of both streams, as user and admin.
        for route in routes:
            for name in STREAM_QUERY_NAMES:
                for value in NASTY_STRINGS + STREAM_SPECIALS + [token, token[:-1], token + "A"]:
                    for auth in (USER, ADMIN, None):
                        check(api.request("GET", f"{route}?{name}={_query_value(value)}", [a for a in [auth] if a]))
            for value in ODD_HEADER_VALUES:
                check(api.request("GET", route, [USER, ("Last-Event-ID", value)]))
        for job_id in ODD_IDS:
            check(api.request("GET", f"/api/v1/jobs/{job_id}/events", [USER]))
            check(api.request("GET", f"/api/v1/jobs/{job_id}/events?access_token={_query_value(token)}"))

        @FUZZ
        @given(route=st.sampled_from(routes + [f"/api/v1/jobs/{i}/events" for i in ODD_IDS[:6]]),
               values=st.dictionaries(st.sampled_from(STREAM_QUERY_NAMES),
                                      st.one_of(st.sampled_from(STREAM_SPECIALS + [token]), NASTY_TEXT), max_size=4),
               headers=HEADERS, method=st.sampled_from(["GET", "GET", "HEAD", "POST", "DELETE"]))
        def streams(route, values, headers, method):
            query = "&".join(f"{name}={_query_value(value)}" for name, value in values.items())
            check(api.request(method, f"{route}?{query}", header_list(headers)))

        streams()

        @FUZZ
        @given(body=st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=60)),
               auth=AUTH, content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
        def tokens(body, auth, content_type):
            headers = [(name, value) for name, value in (("Authorization", auth), ("Content-Type", content_type))
                       if value]
            check(api.request("POST", "/api/v1/events/token", headers, body))

        tokens()

        # Long-poll: nasty waits with If-None-Match values that never match (no request may hang),
        # and matching ones only with short waits.
        etag = api.request("GET", f"/api/v1/jobs/{owned}", [USER]).headers["ETag"]
        for wait in NASTY_STRINGS:
            for if_none_match in ['"9-9-9"', "W/\"x\"", "", "\ud800", "a" * 300]:
                check(api.request("GET", f"/api/v1/jobs/{owned}?wait={_query_value(wait)}",
                                  [USER, ("If-None-Match", if_none_match)]), allow=(304,))
        for wait in SHORT_WAITS:
            for if_none_match in [etag, "*", f"W/{etag}", f'"x", {etag}']:
                reply = check(api.request("GET", f"/api/v1/jobs/{owned}?wait={wait}",
                                          [USER, ("If-None-Match", if_none_match)]), allow=(304,))
                assert reply.status == 304, reply.describe()


def test_batches_and_deliveries_never_fail(make_settings):
    with live_api(make_settings, webhook_secrets=SECRET) as api:
        batch = check_json(api.request("POST", "/api/v1/jobs/batch", [USER, JSON_TYPE], json.dumps(
            {"jobs": [{"type": "resize", "input": {"storage_key": "inputs/team-a/none.png"},
                       "parameters": {"width": 8}}]}).encode()))
        assert batch["refused"] == 1 and batch["batch_id"]
        for batch_id in ODD_IDS + [batch["batch_id"], str(uuid.uuid4())]:
            for auth in (USER, ADMIN, ("Authorization", "Bearer x")):
                check(api.request("GET", f"/api/v1/batches/{batch_id}", [auth]))
                check(api.request("GET", f"/api/v1/batches/{batch_id}/deliveries", [auth]))
                check(api.request("GET", f"/api/v1/jobs/{batch_id}/deliveries", [auth]))

        @FUZZ
        @given(body=BATCHES, auth=st.sampled_from([USER, ADMIN]))
        def json_batches(body, auth):
            reply = check(api.request("POST", "/api/v1/jobs/batch", [auth, JSON_TYPE],
                                      json.dumps(body).encode("utf-8", "surrogatepass")))
            if reply.status == 200:
                answer = json.loads(reply.body)
                assert len(answer["items"]) == answer["accepted"] + answer["refused"]

        json_batches()
        image = make_image(16, 16, ".png")

        @FUZZ
        @given(jobs=st.one_of(BATCHES.map(lambda b: json.dumps(b).encode("utf-8", "surrogatepass")),
                              st.binary(max_size=60)),
               names=st.lists(st.sampled_from(["file", "a", "jobs", "", "\u00e9", "a" * 300]), max_size=3),
               content=st.sampled_from([image, b"", b"not an image", image[:20]]))
        def multipart_batches(jobs, names, content):
            parts = [field_part("jobs", jobs)] + [
                ({**file_part(content)[0], "Content-Disposition": f'form-data; name="{name}"; filename="x.png"'},
                 content) for name in names]
            check(api.request("POST", "/api/v1/jobs/batch", [USER, MULTIPART], multipart(parts)))

        multipart_batches()

        @FUZZ
        @given(job_id=PATH_IDS, headers=HEADERS, method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]))
        def deliveries(job_id, headers, method):
            check(api.request(method, f"/api/v1/jobs/{job_id}/deliveries", header_list(headers)))
            check(api.request(method, f"/api/v1/batches/{job_id}", header_list(headers)))

        deliveries()
