"""`python -m bench.peers.enqueue PEER N`, in the peer's virtualenv: N jobs waiting for its
workers, and what enqueueing them took as JSON (the peer's module does the work)."""

from __future__ import annotations

import importlib
import json
import sys

if __name__ == "__main__":
    peer, jobs = sys.argv[1], int(sys.argv[2])
    module = importlib.import_module(f"bench.peers.{peer}_noop")
    print(json.dumps(module.enqueue(jobs)))
