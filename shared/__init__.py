"""Code shared by the gateway, the broker bridge and the stats collector: config, JSON, time, logging."""
