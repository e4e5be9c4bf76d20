"""Test and demo support, kept out of the product's core: private Mosquitto and InfluxDB servers
(:mod:`gateway.testing.stack`) and a clock that moves when told (:class:`FakeClock`).

The product imports nothing from here except the demo (``garden-gateway demo``), which runs the
private servers; a layering test keeps it that way.
"""

from gateway.testing.clock import FakeClock

__all__ = ["FakeClock"]
