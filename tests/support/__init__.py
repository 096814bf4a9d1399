"""Helpers the test tiers share: services, processes, the scriptable upstream."""
