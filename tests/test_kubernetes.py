"""deploy/kubernetes without a cluster: the base and every overlay rendered with `kubectl kustomize`, every
object validated against the Kubernetes schema of a pinned version (bundled by kubernetes-validate, so
offline), the topology checked, then the worker, dashboard and export pods' commands, run with the
environment Kubernetes would give them, as plain processes against this machine's PostgreSQL."""

from __future__ import annotations

import base64
import copy
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import click
import kubernetes_validate
import optuna
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from sqlalchemy.engine import make_url

from tests.helpers import ENV_EXAMPLE, MNIST_SMALL, compose, free_port, poll_json, read_env_file, study_exists
from tuner.cli import main
from tuner.results import Tally

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
# The Kubernetes version whose API the manifests must satisfy (the kubectl of this project's machines is v1.32).
KUBERNETES_VERSION = "1.32.0"
KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/external-db")
STANDALONE = (DEPLOY / "tools" / "models-reader.yaml",)  # applied with -f, not part of a kustomization
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# Each tuner pod's container and the compose service whose command and settings it must share.
COMPOSE_COUNTERPART = {
    ("Job", "tuner-workers"): "worker",
    ("Deployment", "tuner-dashboard"): "dashboard",
    ("Job", "tuner-export"): "export",
}
REQUIRED = os.environ.get("TUNER_REQUIRE_SERVERS") == "1"


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("TUNER_REQUIRE_KUBECTL") == "1":
            pytest.fail("kubectl is not installed (TUNER_REQUIRE_KUBECTL=1): it renders the Kubernetes manifests (kubectl kustomize)")
        pytest.skip("kubectl is not installed: the Kubernetes manifests are rendered with `kubectl kustomize`")
    return path


def render(kubectl: str, folder: Path, kustomization: str, env_files: dict[str, str] | None = None) -> list[dict]:
    """``kubectl kustomize`` on a copy of deploy/kubernetes whose database.env files are what a user makes:
    a copy of the committed example, or the text given in ``env_files`` (path relative to deploy/kubernetes)."""
    tree = folder / f"deploy-{secrets.token_hex(3)}"
    shutil.copytree(DEPLOY, tree, ignore=shutil.ignore_patterns("database.env"))  # never a developer's own secrets
    for example in tree.rglob("database.env.example"):
        example.with_suffix("").write_text(example.read_text())
    for relative, text in (env_files or {}).items():
        (tree / relative).write_text(text)
    result = subprocess.run([kubectl, "kustomize", str(tree / kustomization)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} in {[(o['kind'], o['metadata']['name']) for o in objects]}"
    return matches[0]


def generated(objects: list[dict], kind: str, name: str) -> dict:
    """A ConfigMap or Secret of a generator, whose name carries kustomize's content hash."""
    matches = [o for o in objects if o["kind"] == kind and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", o["metadata"]["name"])]
    assert len(matches) == 1, f"{kind} {name}-<hash>: {len(matches)}"
    return matches[0]


def pod_templates(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod template) for every object that makes pods."""
    found = []
    for workload in objects:
        if workload["kind"] not in WORKLOADS:
            continue
        spec = workload["spec"]
        if workload["kind"] == "Pod":
            template = workload
        elif workload["kind"] == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
        else:
            template = spec["template"]
        found.append((workload, template))
    return found


def containers(template: dict) -> list[dict]:
    return template["spec"].get("initContainers", []) + template["spec"]["containers"]


def cpu_cores(quantity) -> Fraction:
    text = str(quantity)
    return Fraction(text[:-1]) / 1000 if text.endswith("m") else Fraction(text)


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def container_environment(objects: list[dict], template: dict, container: dict) -> dict[str, str]:
    """The environment the kubelet gives ``container``: envFrom first, then env in order, where ``$(NAME)``
    expands to an earlier variable (left as it is when there is none) and ``$$`` is a literal ``$``."""

    def source(kind: str, name: str) -> dict[str, str]:
        found = find(objects, kind, name)
        if kind == "Secret":
            return {key: base64.b64decode(value).decode() for key, value in found.get("data", {}).items()}
        return dict(found.get("data", {}))

    environment: dict[str, str] = {}
    for entry in container.get("envFrom", []):
        if "secretRef" in entry:
            environment.update(source("Secret", entry["secretRef"]["name"]))
        else:
            environment.update(source("ConfigMap", entry["configMapRef"]["name"]))
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            environment[name] = _REFERENCE.sub(lambda m: "$" if m[0] == "$$" else environment.get(m[1], m[0]), variable["value"])
            continue
        origin = variable["valueFrom"]
        if "secretKeyRef" in origin:
            environment[name] = source("Secret", origin["secretKeyRef"]["name"])[origin["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in origin:
            environment[name] = source("ConfigMap", origin["configMapKeyRef"]["name"])[origin["configMapKeyRef"]["key"]]
        elif "resourceFieldRef" in origin:
            field = origin["resourceFieldRef"]
            (target,) = [c for c in containers(template) if c["name"] == field.get("containerName", container["name"])]
            kind, resource = field["resource"].split(".")
            assert resource == "cpu", f"{name}: only CPU resource references are resolved here, not {field['resource']}"
            environment[name] = str(math.ceil(cpu_cores(target["resources"][kind]["cpu"]) / cpu_cores(field.get("divisor", "1"))))
        else:
            pytest.fail(f"{name}: unsupported valueFrom {origin}")
    return environment


def tuner_container(template: dict) -> dict:
    (main_container,) = template["spec"]["containers"]
    return main_container


# --- Rendering and the schema -------------------------------------------------------------------------------


def test_the_pinned_kubernetes_schema_is_bundled_offline():
    assert KUBERNETES_VERSION in all_versions()
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}}
    assert kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True) == "1.32"  # that version, not a neighbour
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**service, "spec": {"ports": [{"port": 80}], "typo": 1}}, KUBERNETES_VERSION, strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders_and_every_object_matches_the_kubernetes_schema(kubectl, tmp_path, kustomization):
    objects = render(kubectl, tmp_path, kustomization)
    assert len(objects) >= 6
    errors = []
    for document in objects:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            errors.append(f"{document['kind']}/{document['metadata']['name']}: {getattr(exc, 'message', exc)}")
    assert not errors
    workers = copy.deepcopy(find(objects, "Job", "tuner-workers"))
    workers["spec"]["parallelism"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):  # the schema really is applied
        kubernetes_validate.validate(workers, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("manifest", STANDALONE, ids=lambda path: path.name)
def test_standalone_manifest_matches_the_kubernetes_schema(manifest):
    for document in yaml.safe_load_all(manifest.read_text()):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.slow
def test_a_missing_database_env_file_stops_the_render(kubectl, tmp_path):
    tree = tmp_path / "deploy"
    shutil.copytree(DEPLOY, tree, ignore=shutil.ignore_patterns("database.env"))
    result = subprocess.run([kubectl, "kustomize", str(tree / "base")], capture_output=True, text=True)
    assert result.returncode != 0 and "database.env" in result.stderr


# --- Topology -----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_nothing_is_exposed_outside_the_cluster(kubectl, tmp_path, kustomization):
    objects = render(kubectl, tmp_path, kustomization) + [d for path in STANDALONE for d in yaml.safe_load_all(path.read_text())]
    assert not [o for o in objects if o["kind"] in {"Ingress", "IngressClass", "Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute"}]
    for service in (o for o in objects if o["kind"] == "Service"):
        spec = service["spec"]
        assert spec.get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
        assert not spec.get("externalIPs") and not spec.get("loadBalancerIP") and not any("nodePort" in p for p in spec["ports"])
    for workload, template in pod_templates(objects):
        spec = template["spec"]
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), workload["metadata"]["name"]
        assert not any(port.get("hostPort") for c in containers(template) for port in c.get("ports", [])), workload["metadata"]["name"]
        assert not any("hostPath" in volume for volume in spec.get("volumes", [])), workload["metadata"]["name"]


@pytest.mark.slow
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_run_as_non_root_with_requests_and_limits(kubectl, tmp_path, kustomization):
    objects = render(kubectl, tmp_path, kustomization) + [d for path in STANDALONE for d in yaml.safe_load_all(path.read_text())]
    for workload, template in pod_templates(objects):
        pod_security = template["spec"].get("securityContext", {})
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", workload["metadata"]["name"]
        for container in containers(template):
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True and security.get("runAsUser", 0) > 0, where
            assert security.get("allowPrivilegeEscalation") is False and security.get("capabilities", {}).get("drop") == ["ALL"], where
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                assert resource in resources.get("requests", {}) and resource in resources.get("limits", {}), f"{where}: {resource}"
            assert cpu_cores(resources["requests"]["cpu"]) <= cpu_cores(resources["limits"]["cpu"]), where


@pytest.mark.slow
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_tensorflow_threads_follow_the_cpu_request(kubectl, tmp_path, kustomization):
    objects = render(kubectl, tmp_path, kustomization)
    for kind, name in (("Job", "tuner-workers"), ("Job", "tuner-export")):
        template = find(objects, kind, name)["spec"]["template"]
        container = tuner_container(template)
        (threads,) = [v for v in container["env"] if v["name"] == "TUNER_THREADS"]
        assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "requests.cpu"
        assert threads["valueFrom"]["resourceFieldRef"]["containerName"] == container["name"]
        expected = math.ceil(cpu_cores(container["resources"]["requests"]["cpu"]))
        assert container_environment(objects, template, container)["TUNER_THREADS"] == str(expected) and expected >= 1


@pytest.mark.slow
def test_topology_of_the_base(kubectl, tmp_path):
    objects = render(kubectl, tmp_path, "base")
    kinds = sorted(
        (o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] in ("Secret", "ConfigMap") else o["metadata"]["name"])
        for o in objects
    )
    assert kinds == sorted(
        [
            ("ConfigMap", "tuner-settings"),
            ("Secret", "tuner-database"),
            ("Service", "tuner-postgres"),
            ("StatefulSet", "tuner-postgres"),
            ("NetworkPolicy", "tuner-postgres"),
            ("Job", "tuner-workers"),
            ("Deployment", "tuner-dashboard"),
            ("Service", "tuner-dashboard"),
            ("Job", "tuner-export"),
            ("PersistentVolumeClaim", "tuner-models"),
        ]
    )

    # PostgreSQL: one pod with its own volume claim, named by a headless Service.
    database, service = find(objects, "StatefulSet", "tuner-postgres"), find(objects, "Service", "tuner-postgres")
    assert database["spec"]["serviceName"] == "tuner-postgres" and service["spec"]["clusterIP"] == "None"
    database_labels = database["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= database_labels.items()
    (claim,) = database["spec"]["volumeClaimTemplates"]
    (postgres,) = database["spec"]["template"]["spec"]["containers"]
    assert {mount["name"] for mount in postgres["volumeMounts"]} == {claim["metadata"]["name"]}
    assert "pg_isready" in " ".join(postgres["readinessProbe"]["exec"]["command"])

    # Reachable only from the stack's pods, on its port.
    policy = find(objects, "NetworkPolicy", "tuner-postgres")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= database_labels.items() and policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert [port["port"] for port in rule["ports"]] == [5432]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # no namespaceSelector, no ipBlock
    allowed = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    for workload, template in pod_templates(objects):
        if any("TUNER_STORAGE" in container_environment(objects, template, c) for c in template["spec"]["containers"]):
            labels = template["metadata"]["labels"]
            assert any(selector.items() <= labels.items() for selector in allowed), (
                f"{workload['metadata']['name']} cannot reach the database"
            )

    # The workers: a work-queue Job whose failed pods are replaced.
    workers = find(objects, "Job", "tuner-workers")["spec"]
    assert workers["parallelism"] >= 1 and "completions" not in workers
    assert workers["template"]["spec"]["restartPolicy"] == "Never" and workers["backoffLimit"] >= workers["parallelism"]
    assert tuner_container(workers["template"])["command"][:2] == ["tuner", "run"]
    assert [c["name"] for c in workers["template"]["spec"]["initContainers"]] == ["wait-for-database"]

    # The dashboard: a ClusterIP Service onto the port the dashboard listens on, ready when it answers.
    dashboard = find(objects, "Deployment", "tuner-dashboard")["spec"]["template"]
    front = find(objects, "Service", "tuner-dashboard")["spec"]
    assert front["type"] == "ClusterIP" and front["selector"].items() <= dashboard["metadata"]["labels"].items()
    container = tuner_container(dashboard)
    environment = container_environment(objects, dashboard, container)
    (port,) = [p for p in container["ports"] if p["name"] == front["ports"][0]["targetPort"]]
    assert str(port["containerPort"]) == environment["TUNER_DASHBOARD_PORT"]
    assert container["readinessProbe"]["httpGet"]["port"] == port["name"]

    # The export: a one-shot Job, created suspended, writing where `tuner export-best` writes in the image.
    export = find(objects, "Job", "tuner-export")["spec"]
    assert export["suspend"] is True and export["template"]["spec"]["restartPolicy"] == "Never"
    workdir = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("WORKDIR")][-1]
    volumes = {v["name"]: v for v in export["template"]["spec"]["volumes"]}
    (models,) = [m for m in tuner_container(export["template"])["volumeMounts"] if m["mountPath"] == f"{workdir}/artifacts"]
    find(objects, "PersistentVolumeClaim", volumes[models["name"]]["persistentVolumeClaim"]["claimName"])


@pytest.mark.slow
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_share_the_compose_stacks_commands_and_settings(kubectl, tmp_path, kustomization):
    objects = render(kubectl, tmp_path, kustomization)
    database = read_env_file(DEPLOY / ("base" if kustomization != "overlays/external-db" else kustomization) / "database.env.example")
    settings = read_env_file(DEPLOY / "app" / "settings.env")
    example = read_env_file(ENV_EXAMPLE)
    assert settings.items() <= example.items()  # one vocabulary, the same defaults
    assert set(database) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_HOST", "POSTGRES_PORT"} <= set(example)
    services = compose({**example, **database})["services"]
    for (kind, name), service in COMPOSE_COUNTERPART.items():
        template = find(objects, kind, name)["spec"]["template"]
        container, spec = tuner_container(template), services[service]
        # Service links would add variables of their own, among them TUNER_DASHBOARD_PORT=tcp://<address>:8080.
        assert template["spec"]["enableServiceLinks"] is False, name
        environment = container_environment(objects, template, container)
        assert container["command"] == spec["command"], name
        k8s_settings = {key for key in environment if key.startswith("TUNER_")}
        assert k8s_settings == {key for key in spec["environment"] if key.startswith("TUNER_")}, name
        assert environment["TUNER_STORAGE"] == spec["environment"]["TUNER_STORAGE"], name  # one URL, from the same POSTGRES_* names
        assert make_url(environment["TUNER_STORAGE"]).host == database["POSTGRES_HOST"]
        for key in k8s_settings - {"TUNER_STORAGE", "TUNER_THREADS"}:
            assert environment[key] == spec["environment"][key], f"{name}: {key}"
        command = main.commands[container["command"][1]]
        command.make_context(container["command"][1], list(container["command"][2:]))  # no unknown option
        envvars = {param.envvar for param in command.params if isinstance(param, click.Option) and param.envvar}
        assert k8s_settings <= envvars, f"{name}: {k8s_settings - envvars} are read by no option of 'tuner {container['command'][1]}'"


@pytest.mark.slow
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_secret_in_any_manifest(kubectl, tmp_path, kustomization):
    password = f"pw-{secrets.token_hex(8)}"
    example = {
        "base": "base/database.env.example",
        "overlays/gpu": "base/database.env.example",
        "overlays/external-db": "overlays/external-db/database.env.example",
    }[kustomization]
    env_file = example.removesuffix(".example")
    text = (DEPLOY / example).read_text().replace("POSTGRES_PASSWORD=change-me", f"POSTGRES_PASSWORD={password}")
    assert password in text
    objects = render(kubectl, tmp_path, kustomization, {env_file: text})
    secret = generated(objects, "Secret", "tuner-database")
    assert base64.b64decode(secret["data"]["POSTGRES_PASSWORD"]).decode() == password  # the password reaches the cluster only here
    rest = [o for o in objects if o is not secret]
    assert password not in yaml.safe_dump_all(rest) and password not in yaml.safe_dump_all(objects)  # Secret data is encoded, too
    for workload, template in pod_templates(objects):
        for container in containers(template):
            for variable in container.get("env", []):
                if "PASSWORD" in variable["name"] or "SECRET" in variable["name"]:
                    assert "secretKeyRef" in variable.get("valueFrom", {}), f"{workload['metadata']['name']}: {variable['name']}"
                literal = _REFERENCE.sub("", variable.get("value", ""))
                assert not re.search(r":[^/@]+@", literal), f"{variable['name']} holds a password literal"
            assert any(password in value for value in container_environment(objects, template, container).values()) == any(
                "secretRef" in source for source in container.get("envFrom", [])
            ), f"{workload['metadata']['name']}/{container['name']}"
    committed = [path for path in DEPLOY.rglob("*") if path.is_file() and path.name != "database.env"]  # database.env: ignored, below
    assert len(committed) >= 10
    for path in committed:
        values = re.findall(r"(?im)^\s*-?\s*\"?\w*password\w*\"?\s*[:=]\s*(\S.*)$", path.read_text())
        assert all(value.strip() == "change-me" for value in values), f"{path}: {values}"
    for env_file_path in ("deploy/kubernetes/base/database.env", "deploy/kubernetes/overlays/external-db/database.env"):
        assert subprocess.run(["git", "check-ignore", "-q", env_file_path], cwd=ROOT).returncode == 0, env_file_path


# --- Overlays -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gpu_overlay_gives_each_worker_pod_one_gpu_and_nothing_else(kubectl, tmp_path):
    base, gpu = render(kubectl, tmp_path, "base"), render(kubectl, tmp_path, "overlays/gpu")
    for workload, template in pod_templates(gpu):
        for container in containers(template):
            resources = container.get("resources", {})
            wants = {kind: resources.get(kind, {}).get("nvidia.com/gpu") for kind in ("requests", "limits")}
            if (workload["kind"], workload["metadata"]["name"], container["name"]) == ("Job", "tuner-workers", "worker"):
                assert wants == {"requests": 1, "limits": 1}
            else:
                assert wants == {"requests": None, "limits": None}, f"{workload['metadata']['name']}/{container['name']}"
    workers = find(gpu, "Job", "tuner-workers")["spec"]["template"]
    assert any(t["key"] == "nvidia.com/gpu" for t in workers["spec"]["tolerations"])
    assert tuner_container(workers)["image"] != tuner_container(find(base, "Job", "tuner-workers")["spec"]["template"])["image"]
    for kind, name in (("Deployment", "tuner-dashboard"), ("Job", "tuner-export")):  # the CPU image, unchanged
        assert find(gpu, kind, name) == find(base, kind, name)
    environment = container_environment(gpu, workers, tuner_container(workers))
    assert environment["TUNER_THREADS"] == str(math.ceil(cpu_cores(tuner_container(workers)["resources"]["requests"]["cpu"])))


@pytest.mark.slow
def test_external_database_overlay_has_no_database_of_its_own(kubectl, tmp_path):
    objects = render(kubectl, tmp_path, "overlays/external-db")
    assert not [
        o for o in objects if o["kind"] in {"StatefulSet", "NetworkPolicy", "PersistentVolumeClaim"} and "postgres" in o["metadata"]["name"]
    ]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Service"] == ["tuner-dashboard"]
    external = read_env_file(DEPLOY / "overlays" / "external-db" / "database.env.example")
    for kind, name in COMPOSE_COUNTERPART:
        template = find(objects, kind, name)["spec"]["template"]
        url = make_url(container_environment(objects, template, tuner_container(template))["TUNER_STORAGE"])
        assert (url.host, str(url.port), url.database) == (external["POSTGRES_HOST"], external["POSTGRES_PORT"], external["POSTGRES_DB"])


# --- The pods as local processes ----------------------------------------------------------------------------


def _local_stack(kubectl: str, folder: Path, server, *, name: str, study_file: Path, password: str) -> list[dict]:
    """The base rendered as a user would for this machine: database.env pointing at the local server, and
    settings.env naming a tiny study on the committed MNIST cut."""
    database = (
        f"POSTGRES_USER={server.username}\nPOSTGRES_PASSWORD={password}\nPOSTGRES_DB={server.database}\n"
        f"POSTGRES_HOST={server.host}\nPOSTGRES_PORT={server.port or 5432}\n"
    )
    settings = (DEPLOY / "app" / "settings.env").read_text()
    for key, value in {
        "TUNER_TRIALS": "4",
        "TUNER_STUDY": name,
        "TUNER_STUDY_FILE": str(study_file),
        "TUNER_DATA": str(MNIST_SMALL),
    }.items():
        replacement = f"{key}={value}".replace("\\", "\\\\")  # a backslash in a replacement string starts an escape
        settings, count = re.subn(rf"(?m)^{key}=.*$", replacement, settings)
        assert count == 1, key
    return render(kubectl, folder, "base", {"base/database.env": database, "app/settings.env": settings})


def _run_pod_process(objects, template, extra: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """The pod's main container as a local process: its command (``tuner`` as this interpreter's module) and environment."""
    container = tuner_container(template)
    program, *args = container["command"]
    assert program == "tuner"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **container_environment(objects, template, container), **(extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


@pytest.mark.slow
@pytest.mark.servers
def test_kubernetes_pods_run_as_processes(kubectl, servers, fast_study_file, unique_name, tmp_path):
    server = make_url(servers.url("postgresql"))
    password = f"pw-{secrets.token_hex(8)}"  # the local server trusts this machine; a password must still never show
    objects = _local_stack(kubectl, tmp_path, server, name=unique_name, study_file=fast_study_file, password=password)
    workers_job = find(objects, "Job", "tuner-workers")
    worker_template = workers_job["spec"]["template"]
    storage = container_environment(objects, worker_template, tuner_container(worker_template))["TUNER_STORAGE"]
    # The Job's parallelism, capped at two processes so that two cores are enough.
    workers = [_run_pod_process(objects, worker_template) for _ in range(min(2, workers_job["spec"]["parallelism"]))]
    dashboard = None
    try:
        deadline = time.time() + 120
        while not study_exists(storage, unique_name):
            assert time.time() < deadline and all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            time.sleep(0.5)
        # Loopback and a free port instead of 0.0.0.0:8080: the test's only changes to the dashboard pod.
        port = free_port()
        dashboard_template = find(objects, "Deployment", "tuner-dashboard")["spec"]["template"]
        dashboard = _run_pod_process(objects, dashboard_template, {"TUNER_DASHBOARD_HOST": "127.0.0.1", "TUNER_DASHBOARD_PORT": str(port)})
        probe = tuner_container(dashboard_template)["readinessProbe"]["httpGet"]["path"]
        studies = poll_json(f"http://127.0.0.1:{port}{probe}", dashboard)  # the readiness probe's request answers
        assert unique_name in [study["study_name"] for study in studies["study_summaries"]]
        outputs = [w.communicate(timeout=240) for w in workers]
        assert [w.returncode for w in workers] == [0] * len(workers), outputs  # exit 0: the Job counts the pod as succeeded
        assert all(password not in out + err for out, err in outputs)
        trials = optuna.load_study(study_name=unique_name, storage=storage).get_trials(deepcopy=False)
        assert [t.number for t in trials] == [0, 1, 2, 3] and Tally.of(trials).finished == 4

        export_template = find(objects, "Job", "tuner-export")["spec"]["template"]
        workdir = tmp_path / "work"  # the image's WORKDIR; the models volume is mounted at its artifacts/
        workdir.mkdir()
        export = _run_pod_process(objects, export_template, cwd=workdir)
        out, err = export.communicate(timeout=240)
        assert export.returncode == 0, out + err
        assert password not in out + err
        assert (workdir / "artifacts" / unique_name / "model.keras").is_file()
        assert (workdir / "artifacts" / unique_name / "model.json").is_file()
    finally:
        for process in [*workers, dashboard]:
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.servers
def test_wait_for_database_init_container_waits_for_the_server(kubectl, servers, tmp_path):
    if shutil.which("pg_isready") is None:
        reason = "pg_isready (PostgreSQL's client tools) is not installed: the init containers' command runs it"
        if REQUIRED:
            pytest.fail(f"{reason} (TUNER_REQUIRE_SERVERS=1)")
        pytest.skip(reason)
    server = make_url(servers.url("postgresql"))
    closed_port = free_port()  # nothing listens there
    for kind, name in (("Job", "tuner-workers"), ("Deployment", "tuner-dashboard")):
        for port, should_wait in ((server.port or 5432, False), (closed_port, True)):
            database = f"POSTGRES_USER=u\nPOSTGRES_PASSWORD=p\nPOSTGRES_DB=d\nPOSTGRES_HOST={server.host}\nPOSTGRES_PORT={port}\n"
            objects = render(kubectl, tmp_path, "base", {"base/database.env": database})
            template = find(objects, kind, name)["spec"]["template"]
            (init,) = template["spec"]["initContainers"]
            env = {"PATH": os.environ["PATH"], **container_environment(objects, template, init)}
            process = subprocess.Popen(
                init["command"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
            try:
                out, _ = process.communicate(timeout=3 if should_wait else 30)
                assert not should_wait and process.returncode == 0, out
            except subprocess.TimeoutExpired:
                assert should_wait, f"{name}: still waiting for a server that answers"
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
