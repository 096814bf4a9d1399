"""The HTTP API (Falcon): accepts jobs, reports their state, and lets operators act on them."""
