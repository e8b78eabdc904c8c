"""gatewatch stage: dashboards."""
