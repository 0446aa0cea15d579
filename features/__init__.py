"""Records, the synthetic domain, ingestion, and point-in-time features."""
