"""bridge service."""
