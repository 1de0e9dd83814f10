"""pixq worker: pulls jobs from JetStream and processes them with libvips."""
