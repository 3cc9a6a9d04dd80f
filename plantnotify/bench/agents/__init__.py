"""Agent processes: each module is run as ``python -m plantnotify.bench.agents.<name>``."""
