"""plantnotify: realtime notifications for plant analyses.

Shared code lives here (contracts, settings, database, logging, CLI); the services are the
top-level packages ``api``, ``worker`` and ``bridge``.
"""

__version__ = "0.1.0"
