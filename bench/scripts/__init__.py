"""Stand-alone benchmark scripts: ``python -m bench.scripts.<name>`` (print numbers)."""
