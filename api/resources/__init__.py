"""Falcon resources, one module per noun."""
