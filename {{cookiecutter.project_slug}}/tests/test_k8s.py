"""deploy/k8s rendered offline and checked object by object (no cluster needed).

Each overlay is rendered with `kubectl kustomize` (or a standalone `kustomize build`), then:

- every built-in object passes `kubernetes-validate --strict` for KUBERNETES_VERSION (the
  README names it); cert-manager's kinds have no schema there and are checked below instead;
- checkov's Kubernetes checks pass, except the skips listed, each with its reason, in
  deploy/k8s/checkov.yaml;
- the policy the README promises holds for each object: probes, the restricted Pod Security
  Standard, resources, secrets only through Secret references, network policies that let
  traffic flow only client -> edge -> app -> replay store, and an nginx edge configured from
  the same template files as compose and devstack.

kubectl comes with most Kubernetes setups (and GitHub's runners); checkov and
kubernetes-validate live in their own virtualenv, made by `make k8s-tools` (`make install`
runs it). Under CI=true a missing tool fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import PROJECT_ROOT

KUBERNETES_VERSION = "1.34.0"
K8S_DIR = PROJECT_ROOT / "deploy" / "k8s"
NGINX_DIR = PROJECT_ROOT / "deploy" / "nginx"
OVERLAYS = sorted(path.name for path in (K8S_DIR / "overlays").iterdir() if path.is_dir())
K8S_TOOLS_BIN = Path(sys.prefix) / "k8s-tools" / "bin"
README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")

# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|CREDENTIAL|API_?KEY", re.I)
# A password in a URL (scheme://user:password@host), wherever it is written.
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@]*:[^/\s@]+@", re.I)

Obj = dict[str, Any]


# --------------------------------------------------------------------------- rendering


def ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(message: str) -> None:
    if ci():
        pytest.fail(message + " (CI=true makes it mandatory)")
    pytest.skip(message)


def k8s_tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(K8S_TOOLS_BIN))
    if not found:
        missing(f"{name} is not installed: `make k8s-tools` puts it in {K8S_TOOLS_BIN.parent}")
    assert found
    return found


def render_command(overlay: Path) -> list[str]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize", str(overlay)]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build", str(overlay)]
    missing("neither kubectl nor kustomize is installed; the manifests cannot be rendered")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each overlay rendered once, as a file of YAML documents."""
    directory = tmp_path_factory.mktemp("k8s")
    files = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            render_command(K8S_DIR / "overlays" / overlay),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        files[overlay] = directory / f"{overlay}.yaml"
        files[overlay].write_text(result.stdout, encoding="utf-8")
    return files


def load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def objects(rendered: dict[str, Path], overlay: str) -> list[Obj]:
    return load(rendered[overlay])


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: Obj = spec["template"]["spec"]
    return template


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def workloads(objects: list[Obj]) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    every: list[Obj] = spec.get("initContainers", []) + spec["containers"]
    return every


def env_of(container: Obj) -> dict[str, Obj]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def labels_of(objects: list[Obj], kind: str, name: str) -> dict[str, str]:
    return pod_labels(one(objects, kind, name))


# --------------------------------------------------------------------------- offline tools


def test_every_overlay_renders(rendered: dict[str, Path]) -> None:
    assert "production" in rendered
    for path in rendered.values():
        kinds = {obj["kind"] for obj in load(path)}
        assert {"Deployment", "Service", "NetworkPolicy", "Certificate"} <= kinds


def test_built_in_objects_pass_kubernetes_validate_strict(
    rendered: dict[str, Path], overlay: str
) -> None:
    result = subprocess.run(
        [
            k8s_tool("kubernetes-validate"),
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            str(rendered[overlay]),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    objects = load(rendered[overlay])
    passed = re.findall(r"^INFO .* passed for resource", output, re.M)
    built_in = [obj for obj in objects if not obj["apiVersion"].startswith("cert-manager.io/")]
    assert len(passed) == len(built_in), output
    # Only cert-manager's kinds lack a schema (the policy tests below check them field by field).
    for line in output.splitlines():
        if line.startswith("WARN"):
            assert "with api version cert-manager.io/v1" in line, line


def test_kubernetes_validate_strict_can_fail(tmp_path: Path) -> None:
    """The check above really rejects an unknown field, so its pass means something."""
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n"
        "spec:\n  ports:\n    - port: 80\n      targetPorts: 8080\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [k8s_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(manifest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0
    assert "targetPorts" in result.stdout + result.stderr


def run_checkov(manifest: Path) -> Obj:
    result = subprocess.run(
        [
            k8s_tool("checkov"),
            "--config-file",
            str(K8S_DIR / "checkov.yaml"),
            "--output",
            "json",
            "--file",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        # No telemetry or downloads from a test (skip-download in checkov.yaml does the rest).
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_COLOR": "1"},
    )
    report = json.loads(result.stdout)
    if isinstance(report, list):  # one entry per framework
        [report] = report
    report["returncode"] = result.returncode
    return report  # type: ignore[no-any-return]


def test_checkov_kubernetes_checks_pass(rendered: dict[str, Path], overlay: str) -> None:
    report = run_checkov(rendered[overlay])
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert report["returncode"] == 0
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 100


def test_checkov_can_fail(tmp_path: Path) -> None:
    """A privileged, root, probe-less pod fails the same configuration."""
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  namespace: x\nspec:\n"
        "  containers:\n    - name: c\n      image: busybox\n"
        "      securityContext:\n        privileged: true\n",
        encoding="utf-8",
    )
    report = run_checkov(manifest)
    failed = {check["check_id"] for check in report["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_8", "CKV_K8S_9"} <= failed
    assert report["returncode"] != 0


def test_checkov_skips_are_few_and_explained() -> None:
    text = (K8S_DIR / "checkov.yaml").read_text(encoding="utf-8")
    skips = yaml.safe_load(text)["skip-check"]
    assert len(skips) <= 3
    for check in skips:
        before = text.split(f"- {check}\n")[0].rstrip().splitlines()
        assert before[-1].strip().startswith("#"), f"{check} is skipped without a reason"


# --------------------------------------------------------------------------- pods


def test_workloads_meet_the_restricted_pod_security_standard(objects: list[Obj]) -> None:
    assert len(workloads(objects)) >= 2
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        context = spec.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, name
        assert context.get("runAsUser", 0) > 0, name
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), (name, flag)
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, (name, volume)
        for container in containers(workload):
            where = (name, container["name"])
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert not security.get("privileged"), where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("capabilities", {}).get("add"), where
            assert not container.get("ports") or all(
                "hostPort" not in port for port in container["ports"]
            ), where


def test_every_writable_path_is_an_explicit_volume(objects: list[Obj]) -> None:
    """With a read-only root filesystem, what is written goes to an emptyDir or a claim."""
    for workload in workloads(objects):
        spec = pod_spec(workload)
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        templates = workload["spec"].get("volumeClaimTemplates", [])
        claims = {claim["metadata"]["name"] for claim in templates}
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                if mount.get("readOnly"):
                    continue
                volume = volumes.get(mount["name"], {})
                assert "emptyDir" in volume or mount["name"] in claims, (container["name"], mount)
                if "emptyDir" in volume:
                    assert volume["emptyDir"].get("sizeLimit"), (container["name"], mount)


def test_containers_have_probes_resources_and_tagged_images(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        for container in pod_spec(workload)["containers"]:
            where = (workload["metadata"]["name"], container["name"])
            assert "readinessProbe" in container, where
            assert "livenessProbe" in container, where
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (where, bound)
            image: str = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert (tag and tag != "latest") or "@sha256:" in image, (where, image)


def test_app_deployment(objects: list[Obj]) -> None:
    app = one(objects, "Deployment", "app")
    assert app["spec"]["replicas"] >= 2
    [container] = pod_spec(app)["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The app refuses plain HTTP but for /healthz: the readiness check says it came as HTTPS.
    headers = container["readinessProbe"]["httpGet"].get("httpHeaders", [])
    assert {"name": "X-Forwarded-Proto", "value": "https"} in headers
    # Stop routing first, then drain: the pause fits in the grace period with gunicorn's 30 s.
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 3
    assert pod_spec(app)["terminationGracePeriodSeconds"] >= pause + 30
    env = env_of(container)
    assert env["APP_ENV"]["value"] == "production"
    assert int(env["WEB_CONCURRENCY"]["value"]) >= 1
    assert env["REPLAY_STORE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert env["WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]


def test_trusted_proxy_hops_match_the_path_from_the_edge(objects: list[Obj]) -> None:
    """client -> load balancer (TCP) -> edge nginx -> Service (TCP) -> app: one HTTP proxy."""
    [container] = pod_spec(one(objects, "Deployment", "app"))["containers"]
    assert env_of(container)["TRUSTED_PROXY_HOPS"]["value"] == "1"
    edge = one(objects, "Service", "edge")
    # A TCP load balancer that keeps the client address, not an HTTP proxy adding a hop.
    assert edge["spec"]["type"] == "LoadBalancer"
    assert edge["spec"]["externalTrafficPolicy"] == "Local"
    # Nothing else proxies HTTP in front of the app: no Ingress, no other Service to it.
    assert not find(objects, "Ingress")
    app_labels = labels_of(objects, "Deployment", "app")
    fronting = [
        service["metadata"]["name"]
        for service in find(objects, "Service")
        if selects({"matchLabels": service["spec"].get("selector", {})}, app_labels)
    ]
    assert fronting == ["app"]
    assert one(objects, "Service", "app")["spec"]["type"] == "ClusterIP"


def test_pod_disruption_budgets_and_autoscaler(objects: list[Obj]) -> None:
    for name in ("app", "edge"):
        budget = one(objects, "PodDisruptionBudget", name)
        assert budget["apiVersion"] == "policy/v1"
        assert selects(budget["spec"]["selector"], labels_of(objects, "Deployment", name))
        replicas = one(objects, "Deployment", name)["spec"]["replicas"]
        # A drain can always proceed, and never takes every pod at once.
        assert budget["spec"].get("maxUnavailable", 0) >= 1 or (
            budget["spec"]["minAvailable"] < replicas
        )
    autoscaler = one(objects, "HorizontalPodAutoscaler", "app")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "app",
    }
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    assert autoscaler["spec"]["metrics"]


def test_namespace_enforces_the_restricted_standard(objects: list[Obj]) -> None:
    [namespace] = find(objects, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] not in {"Namespace", "ClusterIssuer"}:
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["kind"]


# --------------------------------------------------------------------------- secrets


def secret_references(objects: list[Obj]) -> set[tuple[str, str]]:
    references = set()
    for workload in workloads(objects):
        for container in containers(workload):
            for entry in container.get("env", []):
                reference = entry.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    references.add((reference["name"], reference["key"]))
    return references


def walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item)


def test_secrets_only_through_secret_references(objects: list[Obj]) -> None:
    # No Secret object is rendered: they are created beside the manifests, never inside.
    assert not find(objects, "Secret")
    for workload in workloads(objects):
        for container in containers(workload):
            for entry in container.get("env", []):
                if SECRET_NAME.search(entry["name"]) or entry["name"].endswith("_URL"):
                    if "value" in entry:
                        assert not SECRET_NAME.search(entry["name"]), entry
                        assert not URL_CREDENTIALS.search(entry["value"]), entry
                    else:
                        source = entry["valueFrom"]
                        assert "secretKeyRef" in source or "configMapKeyRef" in source, entry
            for source in container.get("envFrom", []):
                assert "configMapRef" in source or "secretRef" in source
    for config_map in find(objects, "ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            assert not SECRET_NAME.search(key), (config_map["metadata"]["name"], key)
            assert not URL_CREDENTIALS.search(value), (config_map["metadata"]["name"], key)
    # Nowhere in any object: a password inside a URL, or a PEM private key.
    for text in walk_strings(objects):
        assert not URL_CREDENTIALS.search(text), text[:80]
        assert "PRIVATE KEY-----" not in text


def test_every_referenced_secret_is_created_by_the_readme(objects: list[Obj]) -> None:
    references = secret_references(objects) | {("edge-tls", "tls.crt")}
    assert ("replay-store", "url") in references
    section = README.split("## Running on Kubernetes", 1)[1].split("\n## ", 1)[0]
    for name, key in references:
        if name == "edge-tls":
            continue  # made by cert-manager from the Certificate
        assert f"secret generic {name}" in section, name
        assert f"--from-literal={key}=" in section, (name, key)


def test_replay_store_is_shared_and_password_protected(objects: list[Obj]) -> None:
    [redis] = find(objects, "StatefulSet", "redis")
    [container] = pod_spec(redis)["containers"]
    env = env_of(container)
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "replay-store",
        "key": "redis-password",
    }
    command = " ".join(container["command"])
    assert "requirepass" in command
    assert "$REDIS_PASSWORD" not in command.split("redis-server", 1)[1]
    assert "--appendonly yes" in command
    assert redis["spec"]["volumeClaimTemplates"]
    service = one(objects, "Service", "redis")
    assert service["spec"]["clusterIP"] == "None"


# --------------------------------------------------------------------------- network


def policies_for(objects: list[Obj], labels: dict[str, str], direction: str) -> list[Obj]:
    policy_type = direction.capitalize()
    return [
        policy
        for policy in find(objects, "NetworkPolicy")
        if selects(policy["spec"]["podSelector"], labels)
        and policy_type in policy["spec"]["policyTypes"]
    ]


def allowed(objects: list[Obj], labels: dict[str, str], direction: str) -> list[Obj]:
    """Every rule (peers + ports) that lets traffic in (ingress) or out (egress) of a pod."""
    peers_key = "from" if direction == "ingress" else "to"
    rules = []
    for policy in policies_for(objects, labels, direction):
        for rule in policy["spec"].get(direction, []):
            rules.append({"peers": rule.get(peers_key), "ports": rule.get("ports")})
    return rules


def port_set(rule: Obj) -> set[tuple[str, str]]:
    return {(str(port["port"]), port.get("protocol", "TCP")) for port in rule["ports"] or []}


def test_default_deny_for_every_pod(objects: list[Obj]) -> None:
    denying = [
        policy
        for policy in find(objects, "NetworkPolicy")
        if policy["spec"]["podSelector"] == {}
        and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
    ]
    assert len(denying) == 1
    # And each workload also has policies of its own (it would be unreachable otherwise).
    for workload in workloads(objects):
        assert len(policies_for(objects, pod_labels(workload), "ingress")) >= 2


def test_gunicorn_is_reachable_only_from_the_edge(objects: list[Obj]) -> None:
    # The app believes X-Forwarded-* from any peer here: this policy is what makes that the edge.
    [container] = pod_spec(one(objects, "Deployment", "app"))["containers"]
    assert env_of(container)["FORWARDED_ALLOW_IPS"]["value"] == "*"
    edge = labels_of(objects, "Deployment", "edge")
    app = labels_of(objects, "Deployment", "app")
    rules = allowed(objects, app, "ingress")
    assert rules
    for rule in rules:
        assert rule["peers"], "an ingress rule without peers admits everyone"
        for peer in rule["peers"]:
            assert set(peer) == {"podSelector"}, peer  # no namespace or address ranges
            assert selects(peer["podSelector"], edge)
            assert not selects(peer["podSelector"], app)
        assert port_set(rule) == {("8000", "TCP")}


def test_redis_is_reachable_only_from_the_app(objects: list[Obj]) -> None:
    app = labels_of(objects, "Deployment", "app")
    edge = labels_of(objects, "Deployment", "edge")
    redis = labels_of(objects, "StatefulSet", "redis")
    rules = allowed(objects, redis, "ingress")
    assert rules
    for rule in rules:
        assert rule["peers"]
        for peer in rule["peers"]:
            assert set(peer) == {"podSelector"}, peer
            assert selects(peer["podSelector"], app)
            assert not selects(peer["podSelector"], edge)
        assert port_set(rule) == {("6379", "TCP")}
    # Redis itself opens no connection to anything.
    assert allowed(objects, redis, "egress") == []


def is_dns(rule: Obj) -> bool:
    return port_set(rule) <= {("53", "UDP"), ("53", "TCP")} and all(
        peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
        and peer.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "kube-system"}
        for peer in rule["peers"]
    )


def test_egress_is_dns_app_redis_and_the_jwks_host(objects: list[Obj]) -> None:
    edge = labels_of(objects, "Deployment", "edge")
    app = labels_of(objects, "Deployment", "app")
    redis = labels_of(objects, "StatefulSet", "redis")
    for rule in allowed(objects, edge, "egress"):
        if not is_dns(rule):
            assert port_set(rule) == {("8000", "TCP")}
            assert all(selects(peer["podSelector"], app) for peer in rule["peers"])
    jwks_rules = []
    for rule in allowed(objects, app, "egress"):
        assert rule["peers"], "an egress rule without peers reaches everything"
        if is_dns(rule):
            continue
        if all("ipBlock" in peer for peer in rule["peers"]):
            jwks_rules.append(rule)
            continue
        assert port_set(rule) == {("6379", "TCP")}
        assert all(selects(peer["podSelector"], redis) for peer in rule["peers"])
    # HTTPS only, and never into the cluster's private ranges or the cloud metadata service.
    [jwks] = jwks_rules
    assert port_set(jwks) == {("443", "TCP")}
    for peer in jwks["peers"]:
        excluded = set(peer["ipBlock"].get("except", []))
        assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= excluded


# --------------------------------------------------------------------------- the edge


def template_files() -> dict[str, str]:
    base = NGINX_DIR / "templates"
    return {
        str(path.relative_to(base)): path.read_text(encoding="utf-8")
        for path in sorted(base.rglob("*.template"))
    }


def test_edge_config_comes_from_the_same_template_files(objects: list[Obj]) -> None:
    """Every template on disk reaches /etc/nginx/templates at its own relative path, unchanged,
    and so does the derive script at /docker-entrypoint.d (executable, or the image skips it)."""
    # Looked up by the names the Deployment uses: the generated names carry a content hash.
    config_maps = {obj["metadata"]["name"]: obj for obj in find(objects, "ConfigMap")}
    edge = one(objects, "Deployment", "edge")
    volumes = {volume["name"]: volume for volume in pod_spec(edge)["volumes"]}
    [nginx] = pod_spec(edge)["containers"]
    mounts = {mount["mountPath"]: mount for mount in nginx["volumeMounts"]}
    projected: dict[str, str] = {}
    for source in volumes[mounts["/etc/nginx/templates"]["name"]]["projected"]["sources"]:
        data = config_maps[source["configMap"]["name"]]["data"]
        items = source["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            projected[item["path"]] = data[item["key"]]
    assert projected == template_files()

    # The derive script, and the watcher that reloads nginx when cert-manager renews the
    # certificate, exactly as compose mounts them.
    for script in ("10-derive-settings.envsh", "40-reload-on-certificate-change.sh"):
        entrypoint = mounts[f"/docker-entrypoint.d/{script}"]
        volume = volumes[entrypoint["name"]]["configMap"]
        assert volume["defaultMode"] & 0o111
        data = config_maps[volume["name"]]["data"][entrypoint["subPath"]]
        assert data == (NGINX_DIR / script).read_text(encoding="utf-8")


def compose_nginx_service() -> Obj:
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text(encoding="utf-8"))
    service: Obj = compose["services"]["nginx"]
    return service


def test_edge_settings_cover_every_template_setting(objects: list[Obj]) -> None:
    [nginx] = pod_spec(one(objects, "Deployment", "edge"))["containers"]
    env = {name: entry["value"] for name, entry in env_of(nginx).items()}
    placeholders = {
        name
        for text in template_files().values()
        for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)
    }
    derived = {
        "NGINX_LIMIT_REQ_RATE",
        "NGINX_LIMIT_REQ_OPTIONS",
        "NGINX_UPSTREAM_SERVERS",
        "NGINX_OCSP_STAPLING",
    }
    assert placeholders - derived <= set(env)
    # envsubst touches exactly the names compose lets it touch.
    compose_filter = compose_nginx_service()["environment"]["NGINX_ENVSUBST_FILTER"]
    assert env["NGINX_ENVSUBST_FILTER"] == compose_filter
    assert placeholders <= set(compose_filter.strip("^()$").split("|"))
    assert nginx["image"].split("@")[0] == compose_nginx_service()["image"]


def test_edge_proxies_to_the_app_service_with_the_certificate(objects: list[Obj]) -> None:
    edge = one(objects, "Deployment", "edge")
    [nginx] = pod_spec(edge)["containers"]
    env = {name: entry["value"] for name, entry in env_of(nginx).items()}
    service = one(objects, "Service", "app")
    [app_port] = service["spec"]["ports"]
    assert env["UPSTREAM_SERVER"] == f"{service['metadata']['name']}:{app_port['port']}"
    ports = {port["name"]: port["containerPort"] for port in nginx["ports"]}
    assert env["NGINX_HTTPS_LISTEN"] == str(ports["https"])
    assert env["NGINX_HTTP_LISTEN"] == str(ports["http"])
    edge_ports = one(objects, "Service", "edge")["spec"]["ports"]
    public = {port["name"]: port["port"] for port in edge_ports}
    assert env["HTTPS_PORT"] == str(public["https"]) == "443"

    certificate = one(objects, "Certificate", "edge")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert env["SERVER_NAME"] in certificate["spec"]["dnsNames"]
    certs_mount = next(m for m in nginx["volumeMounts"] if m["mountPath"] == "/etc/nginx/certs")
    volume = next(v for v in pod_spec(edge)["volumes"] if v["name"] == certs_mount["name"])
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert env["TLS_CERT_FILE"] == "/etc/nginx/certs/tls.crt"
    assert env["TLS_KEY_FILE"] == "/etc/nginx/certs/tls.key"
    assert certificate["spec"]["privateKey"]["rotationPolicy"] == "Always"


def test_each_overlay_names_its_issuer(objects: list[Obj], overlay: str) -> None:
    issuer = one(objects, "Certificate", "edge")["spec"]["issuerRef"]
    assert issuer["group"] == "cert-manager.io"
    if overlay == "production":
        assert issuer == {
            "group": "cert-manager.io",
            "kind": "ClusterIssuer",
            "name": "letsencrypt-dns01",
        }
        # The ClusterIssuer beside the overlay solves DNS-01 only: there is no ingress here
        # to answer HTTP-01.
        path = K8S_DIR / "overlays" / "production" / "cluster-issuer.yaml"
        cluster_issuer = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert cluster_issuer["metadata"]["name"] == issuer["name"]
        solvers = cluster_issuer["spec"]["acme"]["solvers"]
        assert solvers
        assert all("dns01" in solver and "http01" not in solver for solver in solvers)
        assert not list(filter(URL_CREDENTIALS.search, walk_strings(cluster_issuer)))
    else:
        # Any other overlay's issuer is one it brings itself.
        assert find(objects, issuer["kind"], issuer["name"])


def test_readme_names_the_kubernetes_version_and_pinning() -> None:
    section = README.split("## Running on Kubernetes", 1)[1].split("\n## ", 1)[0]
    major_minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert f"Kubernetes {major_minor}" in section
    assert "digest" in section
