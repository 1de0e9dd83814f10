"""pixq.client: the Python client of the pixq HTTP API, async (``AsyncClient``) and blocking (``Client``).

Both cover every route of api/routes.py with the server's own models: requests from pixq.spec
(ResizeParams, CropParams, PipelineSpec, AnalyzeOptions) and pixq.schemas (inputs, batch items),
answers parsed into pixq.schemas. Submits carry an Idempotency-Key reused on every retry;
429 and 503 are retried with jittered backoff honouring Retry-After (RetryPolicy). Errors are
ApiError (the server's ErrorCode, status, message, request id) or ConnectionFailed.
``verify_webhook`` checks a webhook pixq sent. The ``pixq`` CLI is built on AsyncClient.

Modules: aio (the routes), sync (the blocking facade), transport (HTTP, retries, errors),
retry (the policy), sse (event-stream parsing and resumes), files (upload bodies),
webhooks (verification), errors, models (client-side result types).
"""

from pixq.client.aio import AsyncClient
from pixq.client.errors import (ApiError, ConnectionFailed, EventsUnsupported, PixqClientError, StreamLost,
                                WebhookVerificationFailed)
from pixq.client.models import JobVersion, Uploaded
from pixq.client.retry import NO_RETRY, RetryPolicy
from pixq.client.sse import ServerEvent, StreamPolicy
from pixq.client.sync import Client
from pixq.client.webhooks import verify_webhook
from pixq.errors import ErrorCode
from pixq.schemas import BatchItem, StorageKeyInput, UploadIdInput, UrlInput
from pixq.spec import AnalyzeOptions, CropParams, PipelineSpec, ResizeParams

__all__ = ["AnalyzeOptions", "ApiError", "AsyncClient", "BatchItem", "Client", "ConnectionFailed", "CropParams",
           "ErrorCode", "EventsUnsupported", "JobVersion", "NO_RETRY", "PipelineSpec", "PixqClientError",
           "ResizeParams", "RetryPolicy", "ServerEvent", "StorageKeyInput", "StreamLost", "StreamPolicy",
           "UploadIdInput", "Uploaded", "UrlInput", "WebhookVerificationFailed", "verify_webhook"]
