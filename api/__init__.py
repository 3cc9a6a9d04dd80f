"""api service."""
