"""``POST /api/v1/analyze``: a job that describes its image instead of transforming it.

The same submit as a resize (multipart ``file`` or JSON ``input``: storage_key, upload_id or
url; ``Idempotency-Key``; ``callback_url``), with one parameter, ``include_gps`` (default
false). The job (type ``analyze``) writes no image: its ``result`` is ``{"variants": [],
"input": {...}, "analysis": {...}}`` (worker.imaging.metadata, worker.imaging.analyze).
"""

from aiohttp import web

from api.handlers.jobs import _submit
from pixq.jobs import JobType


async def submit_analyze(request: web.Request) -> web.Response:
    return await _submit(request, JobType.ANALYZE)
