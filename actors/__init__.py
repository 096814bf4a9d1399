"""Job types, the upstream clients they call, and the broker they run on.

Importing this package has no side effects; `actors.worker` is the module Dramatiq's
command line loads (`dramatiq actors.worker`), which builds the broker from the environment.
"""
