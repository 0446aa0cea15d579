"""The process that answers platforms: the gate, the endpoints, limits, keys, audit, watches."""
