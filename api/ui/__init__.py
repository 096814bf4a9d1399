"""The operators' dashboard: server-rendered pages, token login, CSRF-protected forms."""
