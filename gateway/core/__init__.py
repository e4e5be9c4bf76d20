"""Below everything: errors, the clock, waiting helpers, backoff."""
