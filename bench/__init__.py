"""Courier's benchmark harness: the real stack on local PostgreSQL and RabbitMQ (`make bench`)."""
