"""The one place that maps hub groups, users and broadcasts onto NATS subjects and payloads."""
