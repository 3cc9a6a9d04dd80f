"""Our Mosquitto: configuration rendering, the process, and ``plantnotify broker``."""
