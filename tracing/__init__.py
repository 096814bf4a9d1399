"""W3C trace context for jobs, and OpenTelemetry spans around their work."""
