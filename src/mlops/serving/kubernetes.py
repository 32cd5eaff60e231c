"""Kubernetes manifests for a Bento (`make k8s`): a Deployment of the image `make
containerize` builds, probed on /livez and /readyz, a Service, optionally a
HorizontalPodAutoscaler, and the API keys mounted from a Secret. The objects are named
after the model, not the version, so applying a new version's manifests rolls the pods
over to it, each new pod taking traffic only once its model is ready."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mlops.errors import ConfigError
from mlops.serving.deployment import Deployment

PORT = 3000  # where `bentoml serve` listens in the image BentoML builds
KEYS_DIR = "/etc/mlops/keys"  # the Secret's mount; a Secret update reaches the file
PAYLOAD_DIR = "/var/lib/mlops/payloads"
# the user BentoML's image runs as, named there (`USER bentoml`): Kubernetes can check
# runAsNonRoot only for a number (test_serving_network checks it against BentoML's own)
BENTO_UID = 1034


def object_name(bento_name: str) -> str:
    """A name Kubernetes takes for every kind (an RFC 1035 label) from the Bento's name."""
    name = re.sub(r"[^a-z0-9-]+", "-", bento_name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"mlops-{name}"
    return name[:63].rstrip("-")


def image_name(bento_tag: str, registry: str) -> str:
    """What `make containerize` tags (the Bento's tag), under `registry` once pushed there."""
    return f"{registry.rstrip('/')}/{bento_tag}" if registry else bento_tag


def _container(deployment: Deployment, image: str, settings) -> dict[str, Any]:
    cpu = settings.cpu or deployment.workers * deployment.torch_threads
    env = [{"name": "BENTOML_PORT", "value": str(PORT)}]
    mounts = []
    if deployment.auth != "off":
        env.append({"name": "MLOPS_API_KEYS_FILE", "value": f"{KEYS_DIR}/keys"})
        mounts.append({"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True})
    if deployment.payload_sample_rate > 0:
        env.append({"name": "MLOPS_PAYLOAD_DIR", "value": PAYLOAD_DIR})
        mounts.append({"name": "payloads", "mountPath": PAYLOAD_DIR})

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
                "failureThreshold": failures, "timeoutSeconds": 5}  # fmt: skip

    resources = {"cpu": str(cpu), "memory": str(settings.memory)}
    return {
        "name": "service",
        "image": image,
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": env,
        "volumeMounts": mounts,
        "resources": {"requests": resources, "limits": resources},
        # a worker loads and checks its model before /readyz answers: up to 3 minutes
        "startupProbe": probe("/readyz", 2, 90),
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/livez", 10, 3),
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def manifests(deployment: Deployment, bento_tag: str, settings) -> list[dict[str, Any]]:
    """Deployment, Service and (with settings.autoscale.enabled) HorizontalPodAutoscaler."""
    name = object_name(bento_tag.split(":")[0])
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "mlops"}
    version_labels = {**labels, "mlops/model-version": deployment.model_version}
    meta = {"name": name, "namespace": str(settings.namespace), "labels": version_labels}
    volumes = []
    if deployment.auth != "off":
        volumes.append({"name": "api-keys", "secret": {"secretName": str(settings.keys_secret)}})
    if deployment.payload_sample_rate > 0:
        claim = settings.get("payload_claim")
        volumes.append({"name": "payloads", **(
            {"persistentVolumeClaim": {"claimName": str(claim)}} if claim else {"emptyDir": {}}
        )})  # fmt: skip
    annotations = {"mlops/registered-model": deployment.model_name,
                   "mlops/run-id": deployment.run_id}  # fmt: skip
    if not deployment.auth_metrics:  # Prometheus' Kubernetes discovery reads these
        annotations |= {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics"}  # fmt: skip
    autoscale = settings.autoscale
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        # a new version's pod is added before an old one goes: no capacity lost on a rollout
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {"labels": version_labels, "annotations": annotations},
            "spec": {
                "containers": [
                    _container(deployment, image_name(bento_tag, settings.registry), settings)
                ],
                "volumes": volumes,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": BENTO_UID,
                    "runAsGroup": BENTO_UID,
                    "fsGroup": BENTO_UID,
                },
                "terminationGracePeriodSeconds": 30,
            },
        },
    }
    if not autoscale.enabled:  # with an autoscaler, replicas are its to set
        spec = {"replicas": settings.replicas, **spec}
    documents = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {
            "type": str(settings.service_type), "selector": labels,
            "ports": [{"name": "http", "port": settings.service_port, "targetPort": "http"}],
        }},
    ]  # fmt: skip
    if autoscale.enabled:
        low, high = autoscale.min_replicas, autoscale.max_replicas
        if isinstance(low, int) and isinstance(high, int) and not 1 <= low <= high:
            raise ConfigError(
                f"deploy.kubernetes.autoscale: min_replicas={autoscale.min_replicas}, "
                f"max_replicas={autoscale.max_replicas}: need 1 <= min_replicas <= max_replicas"
            )
        documents.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                          "metadata": meta, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": autoscale.cpu_percent}}}],
        }})  # fmt: skip
    return documents


def validate(documents: list[dict[str, Any]], kubernetes_version: str | None) -> str:
    """Each object checked against the Kubernetes API's own schemas (kubernetes-validate,
    offline, strict: an unknown field is an error); the version checked against."""
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions

    known = sorted({tuple(int(p) for p in v.split(".")[:2]) for v in all_versions()})
    target = str(kubernetes_version or kubernetes_validate.latest_version()).removeprefix("v")
    parts = tuple(int(p) for p in target.split(".")[:2] if p.isdigit())
    if len(parts) != 2 or not known[0] <= parts <= known[-1]:
        oldest, newest = ".".join(map(str, known[0])), ".".join(map(str, known[-1]))
        raise ConfigError(f"deploy.kubernetes.version={target}: kubernetes-validate has the "
                          f"schemas of {oldest} to {newest}; name one of those")  # fmt: skip
    for document in documents:
        try:
            kubernetes_validate.validate(document, target, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            raise ConfigError(
                f"the {document['kind']} is not valid Kubernetes {target} at "
                f"{where}: {error.message}; check deploy.kubernetes"
            ) from None
    return target


class _PlainDumper(yaml.SafeDumper):
    """Every object written out where it appears: no YAML anchors for the shared metadata."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_manifests(documents: list[dict[str, Any]], folder: Path) -> Path:
    path = folder / f"{documents[0]['metadata']['name']}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False))
    return path


def bento_manifests(settings, bento_tag: str) -> tuple[Path, list[dict[str, Any]], str]:
    """The manifests of a stored Bento (BENTOML_HOME set), validated and written to
    settings.output_dir: (path, documents, Kubernetes version validated against)."""
    import bentoml

    try:
        bento = bentoml.bentos.get(bento_tag)
    except bentoml.exceptions.NotFound:
        raise ConfigError(f"no Bento {bento_tag} in the BentoML store: run mlops deploy "
                          "(make deploy), or name one of `bentoml list`") from None  # fmt: skip
    deployment = Deployment.read(Path(bento.path) / "src")
    documents = manifests(deployment, str(bento.tag), settings)
    checked = validate(documents, settings.get("version"))
    return write_manifests(documents, Path(settings.output_dir)), documents, checked
