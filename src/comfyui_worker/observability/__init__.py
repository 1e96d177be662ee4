"""Seeing inside the sidecar: metrics, job progress, structured logs and the health server."""
