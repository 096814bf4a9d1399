"""Courier's entry points: settings, logging, the `courier` command line and the embedded mode."""
