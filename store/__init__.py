"""The SQL record of jobs, attempts, tokens and the audit log, and every state transition.

Nothing else writes these tables. Functions take a session (or connection) and leave the
transaction to the caller. This package depends on nothing else in the project.
"""
