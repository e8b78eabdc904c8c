"""gatewatch stage: proxy."""

from proxy.compiled import package_path

# The compiled request path (proxy/_compiled), when built from these sources: see proxy/compiled.py.
__path__ = package_path(__path__)
