"""service.settings: values from MNIST_AE_* variables, mistakes named by their variable."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import uvicorn
from pydantic import ValidationError

from service.settings import Settings, describe_settings_error, unknown_settings
from tests.conftest import REPO


def test_settings_come_from_prefixed_variables_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_AE_MAX_BATCH_IMAGES", "64")
    monkeypatch.setenv("mnist_ae_device", "cpu")
    settings = Settings()
    assert settings.max_batch_images == 64 and settings.device == "cpu"


def test_a_misspelt_variable_is_named_with_the_closest_setting() -> None:
    environ = {"MNIST_AE_MAX_BATCH_IMAGE": "64", "MNIST_AE_COLOUR": "blue", "MNIST_AE_DEVICE": "cpu", "HOME": "/"}
    assert unknown_settings(environ) == [
        "MNIST_AE_COLOUR is not a setting, so it is ignored",
        "MNIST_AE_MAX_BATCH_IMAGE is not a setting, so it is ignored; did you mean MNIST_AE_MAX_BATCH_IMAGES?",
    ]


def test_kubernetes_service_links_are_not_reported() -> None:
    # what Kubernetes sets in every pod when a Service named "mnist-ae" exists
    environ = {
        "MNIST_AE_SERVICE_HOST": "10.0.0.7",
        "MNIST_AE_SERVICE_PORT": "8000",
        "MNIST_AE_SERVICE_PORT_HTTP": "8000",
        "MNIST_AE_PORT": "tcp://10.0.0.7:8000",
        "MNIST_AE_PORT_8000_TCP": "tcp://10.0.0.7:8000",
        "MNIST_AE_PORT_8000_TCP_ADDR": "10.0.0.7",
        "MNIST_AE_PORT_8000_TCP_PORT": "8000",
        "MNIST_AE_PORT_8000_TCP_PROTO": "tcp",
    }
    assert unknown_settings(environ) == []


def test_errors_name_the_variable_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_AE_MAX_WAIT_MS", "-3")
    monkeypatch.setenv("MNIST_AE_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError) as info:
        Settings()
    message = describe_settings_error(info.value)
    assert "MNIST_AE_MAX_WAIT_MS='-3': Input should be greater than or equal to 0" in message
    assert "MNIST_AE_LOG_FORMAT='xml': Input should be 'json' or 'text'" in message


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_api_key_is_refused_and_not_echoed(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("MNIST_AE_API_KEY", key)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert describe_settings_error(info.value) == (
        "MNIST_AE_API_KEY: Value error, the API key is empty; unset MNIST_AE_API_KEY to serve without one"
    )


def test_a_wrong_api_key_value_is_never_echoed() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(api_key=12345)
    assert "12345" not in describe_settings_error(info.value)


def test_the_app_warns_about_each_unknown_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.main import create_app

    monkeypatch.setenv("MNIST_AE_MAX_BATCH_IMAGE", "64")
    create_app(Settings(log_format="json"))  # the checkpoint loads in the lifespan, which does not run here
    warnings = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(w["level"], w["message"]) for w in warnings] == [
        (
            "WARNING",
            "MNIST_AE_MAX_BATCH_IMAGE is not a setting, so it is ignored; did you mean MNIST_AE_MAX_BATCH_IMAGES?",
        )
    ]


def test_the_deployment_files_set_only_real_settings_with_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compose files (their defaults), the Kubernetes ConfigMap and the Dockerfile: a misspelt
    name would be ignored, a bad value would stop the service."""
    import yaml

    def defaults(entries: list[str]) -> dict[str, str]:  # "NAME=${NAME:-value}" -> {"NAME": "value"}
        pairs = (entry.split("=", 1) for entry in entries if "=" in entry)
        return {name: re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value) for name, value in pairs}

    sets = [
        defaults(yaml.safe_load((REPO / name).read_text())["services"]["api"]["environment"])
        for name in ("docker-compose.yml", "docker-compose.gpu.yml")
    ]
    sets.append(yaml.safe_load((REPO / "deploy" / "k8s" / "configmap.yaml").read_text())["data"])
    sets.append(dict(re.findall(r"(MNIST_AE_\w+)=(\S+)", (REPO / "Dockerfile").read_text())))
    assert {"MNIST_AE_DEVICE", "MNIST_AE_MAX_BATCH_IMAGES", "MNIST_AE_CHECKPOINT"} <= set(sets[0])
    for values in sets:
        assert unknown_settings(values) == [], values
        with monkeypatch.context() as patch:
            for name, value in values.items():
                patch.setenv(name, value)
            settings = Settings()
        if "MNIST_AE_DEVICE" in values:
            assert settings.device == values["MNIST_AE_DEVICE"]


def test_python_m_service_loads_the_checkpoint_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.__main__ as entry
    import service.main

    loads: list[object] = []
    real = service.main.load_checkpoint  # type: ignore[attr-defined]

    def counting(*args: object, **kwargs: object) -> object:
        loads.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    served: list[object] = []
    monkeypatch.setattr(service.main, "load_checkpoint", counting)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config.app))
    assert entry.main(["--port", "8123"]) == 0
    assert len(loads) == 1 and served and served[0].state.service.checkpoint is not None  # type: ignore[attr-defined]


def test_importing_the_app_module_builds_nothing() -> None:
    """No app at import, so no logging rewired and no settings read: `uvicorn --factory` builds it."""
    code = (
        "import logging, service.main\n"
        "assert not hasattr(service.main, 'app')\n"
        "assert logging.getLogger().handlers == []\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
