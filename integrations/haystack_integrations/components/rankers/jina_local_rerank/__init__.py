"""Adapter (in progress)."""
