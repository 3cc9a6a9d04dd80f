"""Agent processes: each module is run as ``python -m bench.agents.<name>``."""
