"""The status API, the pages, their live events and /metrics."""
