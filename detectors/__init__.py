"""gatewatch stage: detectors."""
