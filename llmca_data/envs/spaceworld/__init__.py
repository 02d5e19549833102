"""Spaceworld (placeholder)."""
