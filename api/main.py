"""`pixq-api`: serve the HTTP API; SIGTERM drains in-flight requests within API_SHUTDOWN_GRACE."""

from aiohttp import web

from api.app import create_app
from pixq.settings import load_settings
from pixq.telemetry import configure_logging


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, service="pixq-api")
    web.run_app(create_app(settings), host=settings.api_host, port=settings.api_port,
                shutdown_timeout=settings.api_shutdown_grace, access_log=None, print=None)


if __name__ == "__main__":
    main()
