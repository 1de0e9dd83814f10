"""Verifying a webhook pixq sent, with the ``standardwebhooks`` library (the reference implementation).

pixq signs per Standard Webhooks (pixq.webhooks, docs/notifications.md): ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` (one ``v1,<base64>`` per active secret). A
receiver may know several secrets during a rotation; the request is genuine when any one of
them verifies it. The library also refuses timestamps more than five minutes away (replays).

    event = verify_webhook(await request.read(), request.headers, ["whsec_..."])
    if event.type == "job.completed": ...
"""

import binascii
from collections.abc import Iterable, Mapping

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pixq.client.errors import WebhookVerificationFailed
from pixq.schemas import EventEnvelope


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secrets: str | Iterable[str]) -> EventEnvelope:
    """The event of a genuine webhook; WebhookVerificationFailed for anything else (a forged or
    altered body, a wrong or missing header, a stale timestamp, a secret that is not whsec_...)."""
    body = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    plain_headers = {name: value for name, value in headers.items()}
    reasons = []
    for secret in [secrets] if isinstance(secrets, str) else list(secrets):
        try:
            event = Webhook(secret).verify(body, plain_headers)
        except (WebhookVerificationError, ValueError, binascii.Error, RuntimeError) as exc:
            reasons.append(str(exc) or type(exc).__name__)
            continue
        return EventEnvelope.model_validate(event)
    raise WebhookVerificationFailed(f"webhook does not verify: {'; '.join(reasons) or 'no secret given'}")
