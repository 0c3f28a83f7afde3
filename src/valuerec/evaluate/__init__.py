"""Metrics and protocols shared by every model."""
