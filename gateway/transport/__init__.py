"""SignalR transports: negotiate, connection tokens, and the WebSocket transport at the hub path.

Each transport is a thin adapter between aiohttp and the hub: it owns sockets and framing (including
the fan-out fast path, :meth:`gateway.hub.outbound.TransportLink.write_shared`), moves client bytes into
:meth:`gateway.hub.host.HubHost.receive` and writes what the session's connection queues.
"""
