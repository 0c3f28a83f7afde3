"""Features computed from the event store in SQL: per-user RFM summaries for value models."""
