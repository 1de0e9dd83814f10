"""pixq: shared code for the API and the workers (job contract, settings, storage, status, queue)."""

__version__ = "0.1.0"
