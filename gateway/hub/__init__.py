"""The hub: sessions, the registry, the dispatcher, AdminHub, fan-out, presence and snapshots.

It speaks hub messages and groups; it never sees a socket or an HTTP request. Transports hand it a
:class:`gateway.hub.outbound.TransportLink` per connection and it hands them encoded messages.
"""
