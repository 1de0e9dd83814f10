"""Prometheus metrics of the API process (served on GET /metrics).

pixq_api_requests_total counts by status *class* (2xx, 3xx, 4xx, 5xx), and has a series at 0
for every route of api.routes x class from the first scrape, so an alert on the 5xx rate sees
a route's first error as an increase rather than as a new series.
"""

from aiohttp import web
from prometheus_client import Counter, Histogram

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
"""Values of the ``status`` label (api.middleware.observe labels a response ``f"{status // 100}xx"``)."""


REQUESTS = Counter("pixq_api_requests_total", "HTTP requests handled, by route and status class (2xx..5xx)",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "pixq_api_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOBS_SUBMITTED = Counter("pixq_jobs_submitted_total", "Jobs accepted (202) by the API", ["type", "tenant"])


def seed_series(app: web.Application, tenants: list[str], job_types: list[str]) -> None:
    """Create every labelled series at 0 before the first scrape (called by the app factory):
    each route x status class, and each tenant x job type, so increase() sees a first error
    or a first submit instead of a series being born."""
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None:
            for status in STATUS_CLASSES:
                REQUESTS.labels(route.method, route.resource.canonical, status)
    for tenant in tenants:
        for job_type in job_types:
            JOBS_SUBMITTED.labels(job_type, tenant)
