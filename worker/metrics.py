"""Prometheus metrics of a worker process (served on METRICS_PORT).

Every labelled counter has a series for each known label value from the first scrape (at 0),
so rate() and alerts see a job type's first failure as an increase rather than as a series
appearing out of nowhere.
"""

from prometheus_client import Counter, Gauge, Histogram

from pixq.jobs import JobType, Priority

OUTCOMES = ("completed", "failed", "retried", "dead_lettered")
"""Values of pixq_worker_jobs_total's ``outcome`` label."""

JOBS = Counter("pixq_worker_jobs_total", "Job attempts by outcome (completed, failed, retried, dead_lettered)",
               ["type", "outcome"])
JOB_SECONDS = Histogram(
    "pixq_worker_job_duration_seconds", "Seconds one attempt took, input fetch to output stored", ["type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge("pixq_worker_jobs_in_flight", "Jobs this worker is processing now")
REUSED = Counter("pixq_worker_jobs_reused_total",
                 "Attempts completed from an earlier job's stored outputs, without processing (worker.reuse)")
QUEUE_PENDING = Gauge("pixq_queue_pending_messages",
                      "Jobs not yet delivered to any worker, both lanes (num_pending of pixq-workers "
                      "+ pixq-workers-batch)")
QUEUE_BACKLOG = Gauge("pixq_queue_backlog_messages",
                      "Jobs not yet finished, both lanes: undelivered plus delivered and not yet acked "
                      "(num_pending + num_ack_pending of pixq-workers + pixq-workers-batch; the sum of "
                      "KEDA's two nats-jetstream lags); scale workers on this")
LANE_BACKLOG = Gauge("pixq_queue_lane_backlog_messages",
                     "One lane's share of pixq_queue_backlog_messages (num_pending + num_ack_pending of its "
                     "consumer)", ["priority"])
DLQ_MESSAGES = Gauge("pixq_dlq_messages", "Dead jobs held in the dead-letter stream")
DEPENDENCY_UP = Gauge("pixq_worker_dependency_up",
                      "1 while the dependency answers this worker's probe, 0 while it is down (the worker "
                      "then pulls no job and holds its in-flight ones; worker.outage)", ["dependency"])
OUTAGE_HOLDS = Counter("pixq_worker_outage_holds_total",
                       "Attempts that met a confirmed outage of a dependency and were held (no retry spent) "
                       "instead of failing", ["dependency"])

for _type in JobType:
    for _outcome in OUTCOMES:
        JOBS.labels(_type.value, _outcome)
for _lane in Priority:
    LANE_BACKLOG.labels(_lane.value)
for _dependency in ("nats", "redis", "storage"):
    DEPENDENCY_UP.labels(_dependency)
    OUTAGE_HOLDS.labels(_dependency)
