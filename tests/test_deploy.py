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
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
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
