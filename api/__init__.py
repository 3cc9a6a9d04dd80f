"""The HTTP API (contract §3): FastAPI app factory in ``api.app``, ``plantnotify api`` in ``api.main``."""
