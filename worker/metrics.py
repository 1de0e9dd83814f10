"""Prometheus metrics of a worker process (served on METRICS_PORT)."""

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter("pixq_worker_jobs_total", "Job attempts by outcome (completed, failed, retried, dead_lettered)",
               ["type", "outcome"])
JOB_SECONDS = Histogram(
    "pixq_worker_job_duration_seconds", "Seconds one attempt took, input fetch to output stored", ["type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge("pixq_worker_jobs_in_flight", "Jobs this worker is processing now")
QUEUE_PENDING = Gauge("pixq_queue_pending_messages", "Jobs waiting in JetStream for a worker (consumer num_pending)")
DLQ_MESSAGES = Gauge("pixq_dlq_messages", "Dead jobs held in the dead-letter stream")
