"""gatewatch stage: demo."""
