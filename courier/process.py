"""What every long-running Courier process does once it has loaded its code."""

from __future__ import annotations

import gc


def freeze_long_lived_objects() -> None:
    """Keep everything loaded so far out of the garbage collector's full passes.

    A process holds some 100,000 long-lived objects (modules, SQLAlchemy metadata, routes,
    actors); a full collection walks all of them and stopped a request for ~50 ms here. The
    last collection, at exit, walks them too: frozen, they leave a stopping process alone, so
    a second Ctrl-C ends a worker group at once on a busy host (bench/RESULTS.md).
    """
    gc.collect()
    gc.freeze()
