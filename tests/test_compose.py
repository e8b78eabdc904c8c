"""docker-compose.yml and Grafana provisioning, checked without Docker: every gatewatch service runs a
real CLI subcommand, ports and env vars agree with the settings, secrets come from the environment,
ports are published on 127.0.0.1 only, and Grafana's datasource points at the compose ClickHouse."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from dashboards import spec
from gatewatch.cli import build_parser
from gatewatch.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
GATEWATCH = {name: s for name, s in SERVICES.items() if s.get("image") == "gatewatch:local" and "entrypoint" not in s}
DEFAULTS = Settings()
PROVISIONING = ROOT / "dashboards" / "provisioning"


def _mount(service: dict[str, Any], target: str) -> Path:
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return ROOT / source
    raise AssertionError(f"nothing mounted at {target}")


def test_the_stack_has_its_infrastructure_and_every_component():
    assert {"kafka", "clickhouse", "grafana", "prometheus"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert SERVICES["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    commands = {" ".join(s["command"][:2]) for s in GATEWATCH.values()}
    for needed in ("collector", "pipeline", "detectors run", "gateway --config", "sidecar --service", "db migrate"):
        assert any(c.startswith(needed) for c in commands), f"no compose service runs `gatewatch {needed}`"


@pytest.mark.parametrize("name", sorted(GATEWATCH))
def test_gatewatch_service_runs_an_existing_subcommand(name: str):
    command = GATEWATCH[name]["command"]
    parser = build_parser()
    try:
        args = parser.parse_args(command)
    except SystemExit:
        pytest.fail(f"service {name}: `gatewatch {' '.join(command)}` is not a gatewatch subcommand (yet)")
    assert callable(args.handler)


@pytest.mark.parametrize("name", sorted(GATEWATCH))
def test_gatewatch_env_vars_are_settings(name: str):
    fields = {f"GATEWATCH_{field.upper()}" for field in Settings.model_fields}
    env = GATEWATCH[name].get("environment", {})
    unknown = sorted(k for k in env if k.startswith("GATEWATCH_") and k not in fields)
    assert not unknown, f"{name}: not a setting: {unknown}"
    assert env["GATEWATCH_HOST"] == "0.0.0.0"  # reachable on the compose network; host ports stay 127.0.0.1


def compose_value(text: str, secrets: dict[str, str]) -> str:
    """A value as `docker compose` sees it once the user exported the secrets."""
    return re.sub(r"\$\{(\w+)(?::?[-?][^}]*)?\}", lambda m: secrets[m.group(1)], text)


SECRETS = {"CLICKHOUSE_PASSWORD": "s3cret", "GATEWATCH_CONTROL_TOKEN": "t0ken", "GRAFANA_ADMIN_PASSWORD": "adm1n"}


@pytest.mark.parametrize("name", sorted(GATEWATCH))
def test_compose_env_loads_as_settings(name: str, monkeypatch: pytest.MonkeyPatch):
    from gatewatch.settings import load_settings

    for key, value in GATEWATCH[name]["environment"].items():
        monkeypatch.setenv(key, compose_value(str(value), SECRETS))
    settings = load_settings()
    assert settings.clickhouse_dsn.startswith("http://") and settings.kafka == "kafka:9092"
    assert settings.control_token.get_secret_value() == SECRETS["GATEWATCH_CONTROL_TOKEN"]


def test_dsn_and_endpoints_name_compose_services_on_their_settings_ports():
    env = {k: compose_value(str(v), SECRETS) for k, v in SERVICES["pipeline"]["environment"].items()}
    dsn = urlparse(env["GATEWATCH_CLICKHOUSE"])
    assert dsn.password == SECRETS["CLICKHOUSE_PASSWORD"]
    assert (dsn.hostname, dsn.port, dsn.path.strip("/")) == ("clickhouse", 8123, env["GATEWATCH_DATABASE"])
    assert dsn.username == SERVICES["clickhouse"]["environment"]["CLICKHOUSE_USER"]
    assert env["GATEWATCH_DATABASE"] == SERVICES["clickhouse"]["environment"]["CLICKHOUSE_DB"]
    assert env["GATEWATCH_KAFKA"] == SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    assert urlparse(env["GATEWATCH_CONTROL_PLANE_URL"]).port == DEFAULTS.control_plane_port
    assert urlparse(env["GATEWATCH_OTLP_ENDPOINT"]).port == DEFAULTS.collector_http_port


def test_published_ports_are_loopback_only_and_match_settings():
    published = {}
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            host, host_port, container_port = str(port).split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published[name, int(container_port)] = int(host_port)
    assert ("gateway", DEFAULTS.gateway_port) in published
    assert ("collector", DEFAULTS.collector_http_port) in published
    assert ("collector", DEFAULTS.collector_grpc_port) in published
    assert ("grafana", 3000) in published
    assert not any(name in ("kafka", "clickhouse") for name, _ in published), "stores stay on the compose network"


def test_secrets_come_from_the_environment_and_must_be_set():
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "GATEWATCH_CONTROL_TOKEN"):
        assert re.search(r"\$\{" + variable + r":\?", text), f"{variable} must be required (${{{variable}:?...}})"
    assert SERVICES["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_PASSWORD:?")
    assert SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert "GATEWATCH_CONTROL_TOKEN" not in SERVICES["app"].get("environment", {})


def test_every_long_running_service_has_a_healthcheck():
    for name, service in SERVICES.items():
        if service.get("restart") != "no":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_healthchecks_and_scrapes_use_the_settings_ports():
    def port_in(name: str) -> int:
        found = re.search(r"127\.0\.0\.1[:', ]+(\d+)", " ".join(SERVICES[name]["healthcheck"]["test"]))
        assert found, name
        return int(found.group(1))

    assert port_in("collector") == DEFAULTS.collector_http_port
    assert port_in("pipeline") == DEFAULTS.pipeline_metrics_port
    assert port_in("detectors") == DEFAULTS.control_plane_port
    assert port_in("gateway") == DEFAULTS.gateway_admin_port
    from proxy.sidecar_config import load_sidecar_config

    sidecar = load_sidecar_config(_mount(SERVICES["sidecar-storefront"], "/etc/gatewatch/sidecar.yaml"))
    assert sidecar.admin_port and port_in("sidecar-storefront") == sidecar.admin_port  # fixed, so it can be scraped
    prometheus = yaml.safe_load(_mount(SERVICES["prometheus"], "/etc/prometheus/prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {
        f"collector:{DEFAULTS.collector_http_port}", f"pipeline:{DEFAULTS.pipeline_metrics_port}",
        f"detectors:{DEFAULTS.control_plane_port}", f"gateway:{DEFAULTS.gateway_admin_port}",
        f"sidecar-storefront:{sidecar.admin_port}",
    }


def test_proxy_configs_mounted_into_compose_are_valid():
    from proxy.gatewayconfig import load_gateway_config
    from proxy.sidecar_config import load_sidecar_config

    gateway = load_gateway_config(_mount(SERVICES["gateway"], "/etc/gatewatch/gateway.yaml"))
    assert gateway.tracing.service_name == spec.GATEWAY.value  # what the dashboards call the gateway
    upstream = gateway.upstreams[gateway.routes[0].upstream].endpoints[0]
    sidecar = load_sidecar_config(_mount(SERVICES["sidecar-storefront"], "/etc/gatewatch/sidecar.yaml"))
    assert upstream == f"sidecar-storefront:{sidecar.inbound.port}"
    assert sidecar.inbound.forward_to.split(":")[0] in SERVICES


def test_grafana_mounts_the_provisioning_and_dashboards():
    grafana = SERVICES["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    assert _mount(grafana, "/etc/grafana/provisioning") == PROVISIONING
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "gatewatch.yaml").read_text())["providers"]
    dashboards_dir = _mount(grafana, providers[0]["options"]["path"])
    assert dashboards_dir == ROOT / "dashboards" / "grafana"
    assert sorted(p.name for p in dashboards_dir.glob("*.json")), "no dashboards to provision"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards_dir / Path(home).name).exists()


def test_datasource_settings_match_the_compose_clickhouse():
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yaml").read_text())["datasources"]
    clickhouse = SERVICES["clickhouse"]["environment"]
    assert (source["type"], source["uid"]) == (spec.DATASOURCE_TYPE, spec.DATASOURCE_UID)
    data = source["jsonData"]
    assert (data["host"], data["port"], data["protocol"]) == ("clickhouse", 8123, "http")
    assert data["username"] == clickhouse["CLICKHOUSE_USER"]
    assert data["defaultDatabase"] == clickhouse["CLICKHOUSE_DB"] == spec.DATABASE.value
    assert data["traces"] == {"defaultDatabase": clickhouse["CLICKHOUSE_DB"], "defaultTable": "otel_traces",
                              "otelEnabled": True, "otelVersion": "latest"}
    assert source["secureJsonData"]["password"] == "$CLICKHOUSE_PASSWORD"  # from Grafana's environment
    assert SERVICES["grafana"]["environment"]["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_PASSWORD:?")


def test_dockerfile_builds_the_package_on_python_311_slim():
    build = SERVICES["collector"]["build"]
    dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert "pip install ." in dockerfile and 'ENTRYPOINT ["gatewatch"]' in dockerfile
    assert re.search(r"^USER ", dockerfile, re.M), "the image must not run as root"
    for package in ("gatewatch", "proxy", "collector", "pipelines", "detectors", "dashboards", "demo"):
        assert f"COPY {package} " in dockerfile, f"{package} missing from the image"
    # the proxies' compiled request path is built in the image, for its interpreter, not copied in
    assert "gatewatch dev compile" in dockerfile and "proxy/_compiled/" in (ROOT / ".dockerignore").read_text()
