"""Observability owned by the parent: metrics, HTTP endpoints, queue stats, logs, sd_notify."""
