"""The peers section: Celery and Procrastinate drain the same no-op job as Courier.

Each peer runs in a virtualenv of its own (`venvs`), made from a pinned requirements file
beside this module; the `*_noop` modules and `enqueue` run there, the rest in Courier's.
Nothing here may import what only Courier's virtualenv has.
"""
