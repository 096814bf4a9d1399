"""The broker side: jobs' messages, dead letters and queue depths (RabbitMQ or in-process).

It reads and marks the record through `store`; nothing in `store` knows the broker.
"""
