"""The stats collector: turns platform events into live snapshots and threshold alerts.

Pure parts (no I/O): :mod:`stats_collector.events` (the wire contract), :mod:`stats_collector.aggregate`
(the platform figures) and :mod:`stats_collector.alerts` (threshold rules). The asyncio/NATS process is built
around them.
"""
