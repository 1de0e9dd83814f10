"""Prometheus metrics of the API process (served on GET /metrics)."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter("pixq_api_requests_total", "HTTP requests handled", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "pixq_api_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOBS_SUBMITTED = Counter("pixq_jobs_submitted_total", "Jobs accepted (202) by the API", ["type", "tenant"])
