"""gatewatch stage: collector."""
