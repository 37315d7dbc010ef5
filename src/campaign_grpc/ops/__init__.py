"""Running the service: the server assembly, security, metrics, logs, limits and background jobs."""
