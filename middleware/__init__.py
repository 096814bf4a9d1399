"""Dramatiq middleware that mirrors every attempt into SQL, and the errors it understands."""
