"""Shared test helpers and fixtures. Real services only: PostgreSQL, RabbitMQ, Mosquitto."""
