"""The data plane of the demo: the shop's services, a sidecar beside each, and the gateway in front."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demo.core import Core, component
from demo.shop import ShopHost
from demo.stack import Stack
from demo.topology import gateway_config, sidecar_config, start_order
from gatewatch.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class SidecarUpstreams:
    """Each service calls others through its own sidecar's outbound listener, naming the callee in Host."""

    host: str
    outbound_ports: dict[str, int] = field(default_factory=dict)

    def url(self, caller: str, callee: str, path: str) -> str:
        return f"http://{self.host}:{self.outbound_ports[caller]}{path}"

    def headers(self, caller: str, callee: str) -> dict[str, str]:
        return {"host": callee}


class DataPlane:
    """Starts shop, sidecars (leaves first) and gateway; `gateway_url` is where clients go."""

    name = "dataplane"

    def __init__(self, settings: Settings, config_dir: Path, seed: int = 0, core: Core | None = None) -> None:
        self.settings = settings
        self.core = core
        self.config_dir = config_dir
        self.shop = ShopHost(settings.host, seed)
        self.missing: list[str] = []
        self.gateway_url = ""
        self.inbound_ports: dict[str, int] = {}
        self._stack = Stack()

    def start(self) -> None:
        """Start everything; on failure stop what had started and re-raise."""
        if self.core is not None:  # proxies export to the core's collector and ask its control plane
            self.settings = self.settings.model_copy(update={
                "otlp_endpoint": self.core.collector_endpoint or self.settings.otlp_endpoint,
                "control_plane_url": self.core.control_plane_url or self.settings.control_plane_url,
            })
        try:
            self._stack.start(self.shop)
            if self._start_sidecars():
                self._start_gateway()
        except BaseException:
            self.stop(2.0)
            raise

    def _write(self, name: str, config: dict[str, Any]) -> Path:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        path = self.config_dir / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _start_sidecars(self) -> bool:
        service_cls = component("proxy.sidecar", "SidecarService", self.missing)
        config_cls = component("proxy.sidecar_config", "SidecarConfig", self.missing)
        if service_cls is None or config_cls is None:
            # No sidecars yet: services call each other directly; the gateway goes to them directly.
            self.inbound_ports = dict(self.shop.ports)
            return True
        upstreams = SidecarUpstreams(self.settings.host)
        for name in start_order():
            raw = sidecar_config(name, self.shop.ports[name], self.inbound_ports, self.settings.host)
            self._write(f"sidecar-{name}.yaml", raw)
            sidecar = service_cls(config_cls.model_validate(raw), self.settings)
            self._stack.start(sidecar)
            self.inbound_ports[name] = int(sidecar.inbound_port)
            upstreams.outbound_ports[name] = int(sidecar.outbound_port)
        self.shop.upstreams.target = upstreams
        return True

    def _start_gateway(self) -> None:
        service_cls = component("proxy.gateway", "GatewayService", self.missing)
        config_cls = component("proxy.gatewayconfig", "GatewayConfig", self.missing)
        if service_cls is None or config_cls is None:
            return
        jwks = self.config_dir / "jwks.json"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        jwks.write_text(json.dumps(self.shop.signer.jwks()))
        raw = gateway_config(self.inbound_ports, jwks, self.settings.host)
        self._write("gateway.yaml", raw)
        gateway = service_cls(config_cls.model_validate(raw), self.settings)
        self._stack.start(gateway)
        self.gateway_url = f"http://{self.settings.host}:{int(gateway.port)}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Gateway first, then sidecars, then the shop."""
        self._stack.stop(timeout_s)
