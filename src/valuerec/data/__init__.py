"""Data layer: the canonical schema, the store, ingest, public data sets and synthetic logs."""
