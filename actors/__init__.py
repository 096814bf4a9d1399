"""Job types and the upstream clients they call.

Importing this package has no side effects; the broker they run on is built by the entry
points (`courier.broker`, and `courier.worker`, the module `dramatiq` loads).
"""
