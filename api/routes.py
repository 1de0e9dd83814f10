"""Every route of the API in one place."""

from aiohttp import web

from api.handlers import analyze, batches, deliveries, dlq, events, jobs, system, uploads


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/resize", jobs.submit_resize)
    app.router.add_post("/api/v1/crop", jobs.submit_crop)
    app.router.add_post("/api/v1/jobs", jobs.submit_pipeline)
    app.router.add_post("/api/v1/analyze", analyze.submit_analyze)
    app.router.add_post("/api/v1/uploads", uploads.create_upload)
    app.router.add_get("/api/v1/jobs", jobs.list_jobs)
    app.router.add_post("/api/v1/jobs/batch", batches.submit_batch)
    app.router.add_get("/api/v1/jobs/{job_id}", jobs.get_job)
    app.router.add_get("/api/v1/jobs/{job_id}/events", events.job_events)
    app.router.add_get("/api/v1/jobs/{job_id}/deliveries", deliveries.job_deliveries)
    app.router.add_get("/api/v1/events", events.tenant_events)
    app.router.add_post("/api/v1/events/token", events.create_token)
    app.router.add_get("/api/v1/batches/{batch_id}", batches.get_batch)
    app.router.add_get("/api/v1/batches/{batch_id}/deliveries", deliveries.batch_deliveries)
    app.router.add_get("/api/v1/dlq", dlq.list_dead)
    app.router.add_post("/api/v1/dlq/replay", dlq.replay_many)
    app.router.add_delete("/api/v1/dlq", dlq.purge_all)
    app.router.add_get("/api/v1/dlq/{job_id}", dlq.show_dead)
    app.router.add_post("/api/v1/dlq/{job_id}/replay", dlq.replay_one)
    app.router.add_delete("/api/v1/dlq/{job_id}", dlq.purge_one)
    app.router.add_get("/files/{key:.+}", system.download)
    app.router.add_post("/uploads/{token}", uploads.receive_upload)
    app.router.add_get("/health/live", system.live)
    app.router.add_get("/health/ready", system.ready)
    app.router.add_get("/metrics", system.metrics)
