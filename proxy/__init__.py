"""gatewatch stage: proxy."""
