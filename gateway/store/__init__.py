"""The durable spool and the way out of it: spool, forwarder, InfluxDB, line protocol."""
