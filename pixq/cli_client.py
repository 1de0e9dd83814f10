"""The CLI's side of pixq.client: its errors, and models printed as the server's JSON.

The CLI makes no HTTP call of its own: every request goes through pixq.client.AsyncClient
(retries, Idempotency-Keys, SSE resumes included). What is left here is presentation:
a command's failure as a message and exit status, and a parsed answer as the JSON the server
sent (``exclude_unset``: exactly the fields it carried, ``null`` ones included).
"""

from typing import Any

from pydantic import BaseModel

from pixq.client import AsyncClient, RetryPolicy

REQUEST_TIMEOUT = 600.0
"""Bound on one request: a directory's batch may upload 64 MiB."""
CLI_RETRY = RetryPolicy(attempts=4, max_elapsed=30.0)
"""A person is waiting: a few retries over at most 30 s, then the error."""


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def open_client(api_url: str, api_key: str) -> AsyncClient:
    return AsyncClient(api_url, api_key or None, retry=CLI_RETRY, timeout=REQUEST_TIMEOUT)


def plain(value: Any) -> Any:
    """A model (or a list or dict of them) as the JSON the server sent."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True, by_alias=True)
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value
