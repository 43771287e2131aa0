"""Deployment files, validated statically (no Docker engine or cluster here), and the Prometheus rules
checked and unit-tested with the real promtool."""

from __future__ import annotations

import base64
import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import build_parser
from app.config import Settings, load_settings
from app.policy_file import load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
RULES = PROM / "rules" / "crm-guard.rules.yml"
RULES_TEST = PROM / "rules" / "crm-guard.rules.test.yml"
K8S = DEPLOY / "k8s"
GRAFANA = ROOT / "grafana"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = {"CrmGuardDown", "CrmGuardConsumerLagGrowing", "CrmGuardDeadLettersRising", "CrmGuardAgentPaused",
          "CrmGuardAlertDeliveryFailing", "CrmGuardApiChangeRefused", "CrmGuardSalesforceDisconnected",
          "CrmGuardSalesforceEventsLost"}

needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool (Debian package prometheus)")


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def settings_env(env: dict[str, Any]) -> Settings:
    """The Settings a process with exactly this environment gets (fails on an unknown or bad value)."""
    unknown = [k for k in env if not k.startswith("CRM_GUARD_")
               or (k[len("CRM_GUARD_"):].lower() not in Settings.model_fields
                   and not k.startswith("CRM_GUARD_TOPIC_"))]
    assert unknown == [], f"not crm-guard settings: {unknown}"
    return load_settings(env={k: str(v) for k, v in env.items()})


# ---------------------------------------------------------------- Prometheus


@needs_promtool
def test_rules_pass_promtool_check_and_define_every_alert() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    names = {r["alert"] for g in load(RULES)["groups"] for r in g["rules"] if "alert" in r}
    assert names == ALERTS
    for group in load(RULES)["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@needs_promtool
def test_rules_unit_tests_pass_with_promtool_test_rules() -> None:
    result = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for case in load(RULES_TEST)["tests"] for t in case.get("alert_rule_test", [])}
    assert tested == ALERTS, "every alert needs a promtool test"


@needs_promtool
def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The rule tests can fail: the same tests with one expected label changed must not pass."""
    shutil.copy(RULES, tmp_path / RULES.name)
    broken = RULES_TEST.read_text().replace("{severity: warning, agent: enrich-bot}", "{severity: warning, agent: x}")
    assert broken != RULES_TEST.read_text()
    (tmp_path / RULES_TEST.name).write_text(broken)
    assert promtool("test", "rules", RULES_TEST.name, cwd=tmp_path).returncode != 0


@needs_promtool
def test_prometheus_config_is_valid_and_scrapes_the_guard_service() -> None:
    result = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = load(PROM / "prometheus.yml")
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "crm-guard"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["guard:6066"]
    # the rules glob loads the rules but not the promtool test file beside them
    [pattern] = config["rule_files"]
    assert fnmatch.fnmatch(f"rules/{RULES.name}", pattern) and not fnmatch.fnmatch(f"rules/{RULES_TEST.name}", pattern)


# ---------------------------------------------------------------- Grafana


def test_dashboards_json_is_what_build_py_generates() -> None:
    result = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"]] + [c for p in dashboard["panels"] for c in p.get("panels", [])]


def test_dashboards_are_well_formed_and_panels_do_not_overlap() -> None:
    sys.path.insert(0, str(ROOT))
    from grafana.promql import load_dashboards

    dashboards = load_dashboards()
    assert set(dashboards) == {"crm-guard-fleet.json", "crm-guard-agent.json", "crm-guard-pipeline.json"}
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == 3
    for name, dash in dashboards.items():
        panels = _panels(dash)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), name
        cells: set[tuple[int, int]] = set()
        for p in panels:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, (name, p["title"])
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not mine & cells, f"{name}: panel {p['title']!r} overlaps another"
            cells |= mine
            for t in p.get("targets", []):
                assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, p["title"])
        assert any(v["name"] == "datasource" for v in dash["templating"]["list"])
    agent_vars = {v["name"]: v for v in dashboards["crm-guard-agent.json"]["templating"]["list"]}
    assert "agent" in agent_vars and agent_vars["agent"]["type"] == "query"
    exprs = [t["expr"] for p in _panels(dashboards["crm-guard-agent.json"]) for t in p.get("targets", [])]
    assert exprs and all('agent="$agent"' in e for e in exprs), "every agent panel is filtered by $agent"


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    [source] = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
    [provider] = load(GRAFANA / "provisioning" / "dashboards" / "crm-guard.yml")["providers"]
    assert provider["type"] == "file"
    compose = load(DEPLOY / "docker-compose.yml")
    mounts = dict(_bind_mounts(compose["services"]["grafana"]))
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"


# ---------------------------------------------------------------- docker-compose


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def _ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in p.split(":")) for p in service.get("ports", [])]  # type: ignore[misc]


def test_compose_services_ports_and_mounts_are_sane() -> None:
    compose = load(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"kafka", "guard", "prometheus", "grafana", "salesforce-subscriber"}
    assert services["salesforce-subscriber"]["profiles"] == ["salesforce"]  # never started by default
    assert services["salesforce-subscriber"]["command"][:2] == ["salesforce", "subscribe"]
    host_ports = [h for s in services.values() for h, _ in _ports(s)]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    assert dict(_ports(services["guard"])) == {6066: 6066}
    assert dict(_ports(services["prometheus"])) == {9090: 9090}
    assert dict(_ports(services["grafana"])) == {3000: 3000}
    for name, service in services.items():
        for dep in service.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for source, _ in _bind_mounts(service):
            assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"named volume {source} not declared"
    assert all("image" in s or "build" in s for s in services.values())


def test_compose_kafka_runs_in_kraft_mode_and_the_guard_reaches_it() -> None:
    services = load(DEPLOY / "docker-compose.yml")["services"]
    kafka = services["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not [k for k in env if "ZOOKEEPER" in k]
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    voter_id, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == env["KAFKA_NODE_ID"] and voter == f"kafka{listeners['CONTROLLER']}"
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID must be a base64 UUID"
    guard = services["guard"]
    settings = settings_env(guard["environment"])
    assert settings.bootstrap_servers == advertised["PLAINTEXT"] == "kafka:9092"
    assert settings.web_host == "0.0.0.0" and settings.web_port == 6066
    assert guard["depends_on"]["kafka"]["condition"] == "service_healthy"
    # the policy file the guard is told to read is mounted there, and it is a valid policy
    mounts = {target.rstrip("/"): source for source, target in _bind_mounts(guard)}
    assert mounts[settings.policy_file] == "./policy.example.yaml"
    policy = load_policy(DEPLOY / "policy.example.yaml")
    assert policy.agents


def test_dockerfile_builds_the_package_and_runs_the_worker() -> None:
    compose = load(DEPLOY / "docker-compose.yml")
    build = compose["services"]["guard"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT and dockerfile == DEPLOY / "Dockerfile"
    text = dockerfile.read_text()
    for source in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, flags=re.M):
        for item in source.split():
            if item != "README.md":  # written by the lead, required by pyproject's readme
                assert (context / item).exists(), f"Dockerfile copies missing {item}"
    assert "EXPOSE 6066" in text and 'ENTRYPOINT ["crm-guard"]' in text and 'CMD ["run"]' in text
    assert re.search(r"^USER 10001$", text, flags=re.M), "the worker runs as a non-root user"


# ---------------------------------------------------------------- Kubernetes


def k8s_docs() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            for key in ("apiVersion", "kind", "metadata"):
                assert key in doc, f"{path.name}: missing {key}"
            assert doc["metadata"].get("name"), f"{path.name}: metadata.name"
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "crm-guard", f"{path.name}: {doc['kind']} namespace"
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_manifests_have_required_fields_and_kustomization_lists_them() -> None:
    docs = k8s_docs()
    kinds = {kind for kind, _ in docs}
    assert {"Namespace", "Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
            "ServiceMonitor", "PrometheusRule"} <= kinds
    kustomization = load(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"], "example secrets are never applied as is"


def test_k8s_deployment_service_and_monitoring_fit_together() -> None:
    docs = k8s_docs()
    deployment = docs[("Deployment", "crm-guard")]
    spec = deployment["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert _matches(spec["selector"]["matchLabels"], pod_labels)
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["image"] and container["args"] == ["run"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 6066}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert set(mounts) <= set(volumes)
    for volume in volumes.values():
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in docs
        if "secret" in volume:
            assert ("Secret", volume["secret"]["secretName"]) in docs
    for source in container["envFrom"]:
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        assert (kind, ref["name"]) in docs

    # settings: every key is a crm-guard setting, the values validate, paths point into mounted volumes
    settings_map = docs[("ConfigMap", "crm-guard-settings")]["data"]
    settings = settings_env(settings_map)
    assert settings.web_port == ports["http"] and settings.web_host == "0.0.0.0"
    policy_dir, policy_name = settings.policy_file.rsplit("/", 1)
    assert mounts["policy"] == policy_dir
    policy_text = docs[("ConfigMap", "crm-guard-policy")]["data"][policy_name]
    assert policy_text == (DEPLOY / "policy.example.yaml").read_text(), "ConfigMap and example policy differ"
    assert parse_policy(policy_text, "k8s policy").agents
    key_dir, key_name = settings.pause_private_key_file.rsplit("/", 1)
    assert mounts["pause-key"] == key_dir
    assert key_name in docs[("Secret", "crm-guard-pause-key")]["stringData"]
    assert settings.state_dir == mounts["state"]
    secret_keys = docs[("Secret", "crm-guard-secrets")]["stringData"]
    settings_env(secret_keys)  # every secret key is a setting

    service = docs[("Service", "crm-guard")]
    assert _matches(service["spec"]["selector"], pod_labels)
    [svc_port] = service["spec"]["ports"]
    assert svc_port["targetPort"] in ports and svc_port["port"] == 6066
    monitor = docs[("ServiceMonitor", "crm-guard")]
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [svc_port["name"]]
    pdb = docs[("PodDisruptionBudget", "crm-guard")]
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert docs[("PrometheusRule", "crm-guard")]["spec"] == load(RULES), "PrometheusRule differs from the rules file"


def test_k8s_salesforce_subscriber_runs_one_subscriber_scraped_as_the_rules_expect() -> None:
    docs = k8s_docs()
    deployment = docs[("Deployment", "crm-guard-salesforce")]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # never two subscribers at once
    pod_labels = spec["template"]["metadata"]["labels"]
    assert _matches(spec["selector"]["matchLabels"], pod_labels)
    assert not _matches(docs[("Service", "crm-guard")]["spec"]["selector"], pod_labels)  # no API traffic to it
    [container] = spec["template"]["spec"]["containers"]
    # the arguments are a command line the CLI takes, and its metrics port is the container's
    parser = build_parser()
    args = parser.parse_args(container["args"])
    assert (args.command, args.action) == ("salesforce", "subscribe")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": args.metrics_port}
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
    env = dict(docs[("ConfigMap", "crm-guard-settings")]["data"])
    env.update({item["name"]: item["value"] for item in container["env"]})
    settings = settings_env(env)
    assert settings.web_host == "0.0.0.0"  # where the metrics server listens
    assert settings.salesforce_instance_url.startswith("https://") and settings.salesforce_channels
    assert {source.get("secretRef", {}).get("name") for source in container["envFrom"]} >= {"crm-guard-secrets"}
    secret_keys = docs[("Secret", "crm-guard-secrets")]["stringData"]
    assert "CRM_GUARD_SALESFORCE_CLIENT_ID" in secret_keys and "CRM_GUARD_SALESFORCE_CLIENT_SECRET" in secret_keys
    service = docs[("Service", "crm-guard-salesforce")]
    assert _matches(service["spec"]["selector"], pod_labels)
    [svc_port] = service["spec"]["ports"]
    assert svc_port["targetPort"] == "metrics" and svc_port["port"] == args.metrics_port
    monitor = docs[("ServiceMonitor", "crm-guard-salesforce")]
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    # the job label a ServiceMonitor gives is the Service's name: the one the rules read
    assert 'job="crm-guard-salesforce"' in RULES.read_text()
    kustomization = load(K8S / "kustomization.yaml")
    assert "salesforce-subscriber.yaml" not in kustomization["resources"]  # only where an org is guarded
