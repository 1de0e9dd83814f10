"""Prometheus metrics of the API process (served on GET /metrics).

pixq_api_requests_total counts by status *class* (2xx, 3xx, 4xx, 5xx), and has a series at 0
for every route of api.routes x class from the first scrape, so an alert on the 5xx rate sees
a route's first error as an increase rather than as a new series.
"""

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
"""Values of the ``status`` label (api.middleware.observe labels a response ``f"{status // 100}xx"``)."""


REQUESTS = Counter("pixq_api_requests_total", "HTTP requests handled, by route and status class (2xx..5xx)",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "pixq_api_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUESTS_IN_FLIGHT = Gauge(
    "pixq_api_requests_in_flight", "HTTP requests being handled now (a scrape counts itself); what a SIGTERM "
    "waits for, up to API_SHUTDOWN_GRACE")
JOBS_SUBMITTED = Counter("pixq_jobs_submitted_total", "Jobs accepted (202) by the API", ["type", "tenant"])
UNPUBLISHED_JOBS_PUBLISHED = Counter(
    "pixq_api_unpublished_jobs_published_total", "Jobs recorded but found missing from PIXQ_JOBS after "
    "REQUEUE_CHECK_AFTER (their API died before publishing them), published by this API")
QUOTA_REFUSALS = Counter("pixq_quota_refusals_total",
                         "Submits refused with QUOTA_EXCEEDED (429), by tenant and quota (jobs_in_flight, megapixels)",
                         ["tenant", "quota"])
RATE_LIMITED_REQUESTS = Counter(
    "pixq_api_rate_limited_total", "Requests refused 429 RATE_LIMITED, by limit kind (ip, tenant) and tenant "
    "('' for the ip kind: it is checked before authentication)", ["kind", "tenant"])
RATE_LIMIT_UNCHECKED = Counter(
    "pixq_api_rate_limit_unchecked_total", "Requests let through without a rate-limit check (failing open), "
    "by limit kind and reason: timeout or error (Redis slow or failing), cool_off (skipped after a failure)",
    ["kind", "reason"])


def seed_series(app: web.Application, tenants: list[str], job_types: list[str]) -> None:
    """Create every labelled series at 0 before the first scrape (called by the app factory):
    each route x status class, and each tenant x job type, so increase() sees a first error
    or a first submit instead of a series being born."""
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None:
            for status in STATUS_CLASSES:
                REQUESTS.labels(route.method, route.resource.canonical, status)
    for tenant in tenants:
        for quota in ("jobs_in_flight", "megapixels"):
            QUOTA_REFUSALS.labels(tenant, quota)
        for job_type in job_types:
            JOBS_SUBMITTED.labels(job_type, tenant)
        RATE_LIMITED_REQUESTS.labels("tenant", tenant)
    RATE_LIMITED_REQUESTS.labels("ip", "")
    for kind in ("ip", "tenant"):
        for reason in ("timeout", "error", "cool_off"):
            RATE_LIMIT_UNCHECKED.labels(kind, reason)
