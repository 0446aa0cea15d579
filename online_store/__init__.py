"""The online store: publications built from the warehouse, refreshed by the day, replayed."""
