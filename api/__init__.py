"""pixq HTTP API: validates requests, stores inputs, records status, publishes jobs."""
