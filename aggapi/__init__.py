"""aggapi: Kubernetes at the edge as an aggregated API server (cloud side)."""

__version__ = "0.1.0"
