"""What deploys Aragog, checked offline: the kustomize package (infra/k8s), docker-compose.yml
and the image's health-probe command.

The Kubernetes checks render the overlays with `kubectl kustomize` (skipped, with the reason,
when kubectl is not on PATH; `make deploy-check` installs Debian's) and check invariants a
schema cannot: every workload has resources, the three probes and a non-root security
context; the four services probe gRPC health on the port they listen on; every ARAGOG_
variable is a real setting and each service's environment builds its settings; Services,
PDBs, HPAs and the ServiceMonitor point at things that exist; Redis keeps an append-only file
and takes its password from a Secret; production holds no Secret value. The ServiceMonitor
is a CRD, which `kubernetes-validate` has no schema for: its fields are checked here.
`make deploy-check` validates the rendered built-in kinds against Kubernetes 1.30's schemas.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import warnings
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from aragog.common import settings as settings_mod
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not on PATH (make deploy-check installs Debian's kubectl)")

SERVICES = {  # Deployment -> (command, settings class, gRPC port)
    "router": ("aragog-router", settings_mod.RouterSettings, 50051),
    "scheduler": ("aragog-scheduler", settings_mod.SchedulerSettings, 50052),
    "load-monitor": ("aragog-load-monitor", settings_mod.LoadMonitorSettings, 50053),
    "executor": ("aragog-executor", settings_mod.ExecutorSettings, 50054),
}
SETTINGS_OF_COMMAND = {cmd: cls for cmd, cls, _ in SERVICES.values()}
SETTINGS_OF_COMMAND["aragog-pool"] = settings_mod.PoolSettings
WORKLOADS = ("Deployment", "StatefulSet")
KIND = {"scheduler": "StatefulSet"}  # an active scheduler and a standby, each its own DNS name
VARIANT = ("production", ["external-redis", "vllm-pool", "tls"])
"""Production with every optional component: rendered so that they are checked too."""


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not on PATH")
    docs = {name: kustomize(K8S / "overlays" / name) for name in ("dev", "production")}
    # kustomize takes only relative paths to other kustomizations
    variant = tmp_path_factory.mktemp("variant")
    rel = os.path.relpath(K8S, variant)
    base, components = VARIANT
    (variant / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{rel}/overlays/{base}"],
        "components": [f"{rel}/components/{c}" for c in components]}))
    docs["production+" + "+".join(components)] = kustomize(variant)
    return docs


def of_kind(docs: list[dict], *kinds: str) -> list[dict]:
    return [d for d in docs if d["kind"] in kinds]


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for e in selector.get("matchExpressions", []):
        assert e["operator"] in ("In", "NotIn"), e
        ok &= (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In")
    return ok


def container_env(docs: list[dict], c: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env
    (a value from a Secret or the pod becomes a placeholder of the right shape)."""
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        env.update(named(docs, "ConfigMap", src["configMapRef"]["name"]).get("data", {}))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e["valueFrom"]:
            key = e["valueFrom"]["secretKeyRef"]["key"]
            env[e["name"]] = "redis://:secret@redis:6379/0" if key == "redis-url" else "secret"
        else:
            env[e["name"]] = "pod-name"
    return env


# -- Kubernetes ---------------------------------------------------------------------------


@needs_kubectl
def test_the_package_renders_every_component(rendered):
    for name, docs in rendered.items():
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        for svc in (*SERVICES, "triton"):
            assert (KIND.get(svc, "Deployment"), svc) in kinds and ("Service", svc) in kinds, \
                (name, svc)
        for hpa in ("router", "executor"):
            assert ("HorizontalPodAutoscaler", hpa) in kinds
            assert ("PodDisruptionBudget", hpa) in kinds
        assert ("NetworkPolicy", "aragog-internal") in kinds
        has_redis = "external-redis" not in name
        assert (("StatefulSet", "redis") in kinds) == has_redis, name
        assert (("Service", "redis") in kinds) == has_redis, name
        namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
        assert namespaces == {"aragog-dev" if name == "dev" else "aragog"}, name
    assert of_kind(rendered["production"], "ServiceMonitor")
    assert not of_kind(rendered["dev"], "ServiceMonitor")  # dev clusters often lack the CRD


@needs_kubectl
def test_every_workload_has_resources_probes_and_runs_as_non_root(rendered):
    for name, docs in rendered.items():
        for w in of_kind(docs, *WORKLOADS):
            where = f"{name}: {w['kind']}/{w['metadata']['name']}"
            pod = w["spec"]["template"]["spec"]
            pod_sc = pod.get("securityContext", {})
            assert pod_sc.get("runAsNonRoot") is True, where
            assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            for c in containers(w):
                sc = {**pod_sc, **c.get("securityContext", {})}
                assert sc.get("runAsUser", 0) != 0 and sc.get("runAsNonRoot") is True, where
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c.get("resources", {}).get(part, {})), \
                        (where, part)
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert probe in c, (where, probe)


@needs_kubectl
def test_the_services_probe_grpc_health_on_the_port_they_listen_on(rendered):
    for name, docs in rendered.items():
        for svc, (command, _cls, port) in SERVICES.items():
            (c,) = named(docs, KIND.get(svc, "Deployment"), svc)["spec"]["template"]["spec"][
                "containers"]
            assert c["command"] == [command], (name, svc)
            env = container_env(docs, c)
            assert env["ARAGOG_LISTEN"] == f"0.0.0.0:{port}", (name, svc)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                # a standby scheduler is alive, not serving: its probes ask "liveness"
                liveness = ["liveness"] if svc == "scheduler" else []
                if "tls" in name:  # the kubelet's gRPC probes cannot speak TLS
                    assert "grpc" not in c[probe], (name, svc, probe)
                    assert c[probe]["exec"]["command"] == [
                        "aragog-healthcheck", f"127.0.0.1:{port}", "2", *liveness]
                    assert {"name": "tls", "mountPath": "/etc/aragog/tls",
                            "readOnly": True} in c["volumeMounts"], (name, svc)
                    continue
                want = {"port": port, **({"service": liveness[0]} if liveness else {})}
                assert c[probe]["grpc"] == want, (name, svc, probe)
            assert {"name": "grpc", "containerPort": port} in c["ports"], (name, svc)
            assert {"name": "metrics", "containerPort": int(env["ARAGOG_METRICS_PORT"])} \
                in c["ports"], (name, svc)


@needs_kubectl
def test_every_aragog_variable_is_a_setting_and_each_environment_builds_its_settings(rendered):
    fields = {cls: {settings_mod.PREFIX + f.name.upper() for f in dataclasses.fields(cls)}
              for cls in settings_mod.ALL_SETTINGS}
    known = set().union(*fields.values()) | {"ARAGOG_TLS_SERVER_NAME"}  # the health probe's
    for name, docs in rendered.items():
        for cm in of_kind(docs, "ConfigMap"):
            unknown = {k for k in cm.get("data", {}) if k.startswith("ARAGOG_")} - known
            assert not unknown, (name, cm["metadata"]["name"], unknown)
        for w in of_kind(docs, *WORKLOADS):
            for c in containers(w):
                env = container_env(docs, c)
                used = {k for k in env if k.startswith("ARAGOG_")}
                assert used <= known, (name, w["metadata"]["name"], used - known)
                cls = SETTINGS_OF_COMMAND.get((c.get("command") or [""])[0])
                if cls is None:
                    continue  # Redis, or Triton's own server in the vllm-pool component
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # an unknown ARAGOG_ variable fails too
                    cls.from_env(env)  # a bad value raises SettingsError naming it


@needs_kubectl
def test_services_pdbs_and_network_policy_select_existing_pods(rendered):
    for name, docs in rendered.items():
        pods = {w["metadata"]["name"]: w for w in of_kind(docs, *WORKLOADS)}
        for s in of_kind(docs, "Service"):
            targets = [w for w in pods.values()
                       if matches({"matchLabels": s["spec"]["selector"]},
                                  w["spec"]["template"]["metadata"]["labels"])]
            assert len(targets) == 1, (name, s["metadata"]["name"])
            ports = {p["name"] for c in containers(targets[0]) for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                assert p["targetPort"] in ports, (name, s["metadata"]["name"], p)
        for pdb in of_kind(docs, "PodDisruptionBudget"):
            assert any(matches(pdb["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
                       for w in pods.values()), (name, pdb["metadata"]["name"])
        (policy,) = of_kind(docs, "NetworkPolicy")
        selector = policy["spec"]["podSelector"]
        selected = {n for n, w in pods.items()
                    if matches(selector, w["spec"]["template"]["metadata"]["labels"])}
        assert {"scheduler", "load-monitor", "executor", "triton"} <= selected, name
        assert "router" not in selected, name
        in_namespace, metrics = policy["spec"]["ingress"]
        assert in_namespace == {"from": [{"podSelector": {}}]}
        assert metrics["ports"] == [{"port": "metrics"}]


@needs_kubectl
def test_hpas_target_existing_deployments_that_leave_them_the_replica_count(rendered):
    for name, docs in rendered.items():
        for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
            ref = hpa["spec"]["scaleTargetRef"]
            assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
            target = named(docs, "Deployment", ref["name"])
            assert "replicas" not in target["spec"], (name, ref["name"])
            assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
            for c in target["spec"]["template"]["spec"]["containers"]:
                assert "cpu" in c["resources"]["requests"]  # Utilization needs a request
        # an active scheduler and a standby (leadership through Redis)
        assert named(docs, "StatefulSet", "scheduler")["spec"]["replicas"] == 2


@needs_kubectl
def test_the_service_monitor_selects_services_that_exist_by_a_port_they_have(rendered):
    for name, docs in rendered.items():
        for sm in of_kind(docs, "ServiceMonitor"):
            assert sm["apiVersion"] == "monitoring.coreos.com/v1"
            assert set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
            selected = [s for s in of_kind(docs, "Service")
                        if matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
            assert {s["metadata"]["name"] for s in selected} == {*SERVICES, "triton"}, name
            for ep in sm["spec"]["endpoints"]:
                assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, ep
                assert re.fullmatch(r"\d+[smh]", ep.get("interval", "30s")), ep
                for s in selected:
                    assert ep["port"] in {p["name"] for p in s["spec"]["ports"]}, \
                        (name, s["metadata"]["name"])


@needs_kubectl
def test_redis_keeps_an_append_only_file_and_takes_its_password_from_a_secret(rendered):
    docs = rendered["dev"]
    redis = named(docs, "StatefulSet", "redis")
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    script = " ".join(c["command"])
    assert "--appendonly yes --appendfsync everysec" in script
    assert "requirepass" in script and "aragog-dev-password" not in script
    (auth,) = [e for e in c["env"] if e["name"] == "REDISCLI_AUTH"]
    ref = auth["valueFrom"]["secretKeyRef"]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert claim["metadata"]["name"] == "data"
    # dev generates the Secret; every reference to it resolves, and its URL has the password
    secret = named(docs, "Secret", ref["name"])
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["redis-url"] == f"redis://:{data['password']}@redis:6379/0"
    for w in of_kind(docs, *WORKLOADS):
        for c in containers(w):
            for e in c.get("env", []):
                r = e.get("valueFrom", {}).get("secretKeyRef")
                if r:
                    assert r["name"] == secret["metadata"]["name"] and r["key"] in data


@needs_kubectl
def test_production_holds_no_secret_value(rendered):
    for name, docs in rendered.items():
        if not name.startswith("production"):
            continue
        assert not of_kind(docs, "Secret"), name
        text = yaml.safe_dump_all(docs)
        assert "password" not in text.replace("key: password", ""), name
        assert not re.search(r"rediss?://[^@\s]*:[^@\s]+@", text), name
        secrets = {e["valueFrom"]["secretKeyRef"]["name"]
                   for w in of_kind(docs, *WORKLOADS) for c in containers(w)
                   for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        assert secrets <= {"aragog-redis", "huggingface"}, secrets  # both documented


# -- docker-compose.yml --------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_file(path: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / path).read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return dict(pairs)


def test_compose_services_have_healthchecks_and_wait_for_healthy_dependencies():
    services = compose()["services"]
    for name, svc in services.items():
        test = svc["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services and cond == {"condition": "service_healthy"}, (name, dep)
    for name, port in {s: p for s, (_c, _k, p) in SERVICES.items()}.items():
        svc = services[name]
        assert svc["healthcheck"]["test"] == ["CMD", "aragog-healthcheck", f"127.0.0.1:{port}"]
        assert svc["environment"]["ARAGOG_LISTEN"] == f"0.0.0.0:{port}"
        assert "redis" in svc["depends_on"]
    assert set(services["executor"]["depends_on"]) == {"redis", "scheduler", "pool"}


def test_compose_redis_keeps_an_append_only_file_with_a_password_from_an_env_file():
    services = compose()["services"]
    redis = services["redis"]
    script = " ".join(redis["command"])
    assert "--appendonly yes --appendfsync everysec" in script and "requirepass" in script
    env = env_file(redis["env_file"][0])
    assert env["ARAGOG_REDIS_URL"] == f"redis://:{env['REDISCLI_AUTH']}@redis:6379/0"
    assert env["REDISCLI_AUTH"] not in (ROOT / "docker-compose.yml").read_text()
    for name in SERVICES:
        assert services[name]["env_file"] == redis["env_file"], name


def test_compose_aragog_variables_are_settings_and_build_each_services_settings():
    known = settings_mod.known_variables()
    for name, svc in compose()["services"].items():
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        for f in svc.get("env_file", []):
            env = {**env_file(f), **env}
        assert {k for k in env if k.startswith("ARAGOG_")} <= known, name
        cls = SETTINGS_OF_COMMAND.get(svc["command"][0])
        if cls is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                cls.from_env(env)


# -- the image's health probe (infra/healthcheck.py) ----------------------------------------


def probe(target: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "infra" / "healthcheck.py"), target, "2"],
                          capture_output=True, text=True, timeout=30)


def test_the_health_probe_follows_grpc_health_checking():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        ok = probe(f"127.0.0.1:{port}")
        assert ok.returncode == 0 and "SERVING" in ok.stdout, ok
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        draining = probe(f"127.0.0.1:{port}")
        assert draining.returncode == 1 and "NOT_SERVING" in draining.stdout, draining
    finally:
        server.stop(0)
    gone = probe(f"127.0.0.1:{port}")
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stdout, gone
    assert probe("http://127.0.0.1:9/v2/health/ready").returncode == 1
