"""Dramatiq middleware that mirrors every attempt into SQL, and the error vocabulary it understands."""
