"""deploy/k8s: every manifest valid against the Kubernetes schemas (strict), all of them in the
kustomization, and the shutdown timings consistent with the service's drain."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import ENV_PREFIX, Settings
from tests.harness import REPO

K8S = REPO / "deploy" / "k8s"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifest(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return document


@pytest.mark.parametrize("name", KUSTOMIZATION["resources"])
def test_every_manifest_is_valid_kubernetes(name: str) -> None:
    kubernetes_validate.validate(manifest(name), "1.37.0", strict=True)  # raises on any problem


def test_the_kustomization_applies_every_manifest() -> None:
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == files


def test_shutdown_fits_in_the_termination_grace_period() -> None:
    """preStop, then the drain grace with /readyz at 503, then uvicorn's graceful timeout: all of it
    inside terminationGracePeriodSeconds, or Kubernetes kills requests mid-flight."""
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(manifest("configmap.yaml")["data"]["MNIST_AE_DRAIN_GRACE_S"])
    graceful = float(container["args"][container["args"].index("--graceful-timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + graceful


def test_probes_and_the_locked_down_container() -> None:
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # readiness by the standard gRPC health service on the gRPC port, which the settings turn on
    grpc_port = int(manifest("configmap.yaml")["data"]["MNIST_AE_GRPC_PORT"])
    assert container["readinessProbe"]["grpc"]["port"] == grpc_port
    assert {"name": "grpc", "containerPort": grpc_port} in container["ports"]
    service_ports = {p["name"]: p for p in manifest("service.yaml")["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc" and service_ports["grpc"]["appProtocol"] == "grpc"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]
    key = next(env for env in container["env"] if env["name"] == "MNIST_AE_API_KEY")
    assert "secretKeyRef" in key["valueFrom"]
    settings = manifest("configmap.yaml")["data"]
    assert {name.removeprefix(ENV_PREFIX).lower() for name in settings} <= set(Settings.model_fields)
    assert "MNIST_AE_API_KEY" not in settings, "the key comes from the Secret"


def test_the_compose_stack_is_locked_down_and_rolls_out_what_train_writes() -> None:
    """What `make docker-smoke` runs for real, checked here without Docker: the API's port on
    localhost by default, its limits, read-only root, health check and a stop grace over the drain;
    the training service under its profile, writing where the API's roll-outs read."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    api, train = compose["services"]["api"], compose["services"]["train"]
    assert api["ports"] == [
        "${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000",
        "${API_BIND:-127.0.0.1}:${GRPC_PORT:-8001}:8001",
    ]
    assert {"MNIST_AE_GRPC_PORT=8001", "MNIST_AE_GRPC_HOST=0.0.0.0"} <= set(api["environment"])
    assert api["read_only"] is True and api["tmpfs"] == ["/tmp"] and "healthcheck" in api
    assert {"cpus", "memory"} <= set(api["deploy"]["resources"]["limits"])
    assert int(api["stop_grace_period"].removesuffix("s")) >= 5 + 30  # drain grace and accepted requests
    assert "models:/models:ro" in api["volumes"] and "MNIST_AE_CHECKPOINT_DIR=/models" in api["environment"]
    assert train["profiles"] == ["train"] and "models:/checkpoints" in train["volumes"]
    assert api["build"]["target"] == "serve" and train["build"]["target"] == "train"
    gpu = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())["services"]["api"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
