"""From a source's message to spool lines: route, decode, enrich, encode; then commit, then ack.

- :mod:`gateway.pipeline.ingest`: :class:`Pipeline` (synchronous, never waits) turns
  ``(topic, payload, received_at_ns)`` into line-protocol lines or a dead letter;
- :mod:`gateway.pipeline.committer`: :class:`Committer` puts many messages' lines into one
  spool transaction and only then acknowledges them;
- :mod:`gateway.pipeline.timesync`: while the wall clock cannot be believed (no RTC, no NTP
  yet), readings the gateway stamps itself are held and released later with corrected times.

Sources hand their messages here and know nothing of the spool behind it.
"""

from gateway.pipeline.committer import Ack, Committer, SeenKeys
from gateway.pipeline.ingest import Collected, Outcome, Pipeline

__all__ = ["Ack", "Collected", "Committer", "Outcome", "Pipeline", "SeenKeys"]
