"""Render a plain nats-server config from deploy/helm/nats-values.yaml (one source of truth).

The chart's values hold the accounts, users and per-service permissions; this turns them into a
nats-server config file for a server run outside Kubernetes (a VM, systemd, the tests), with
JetStream on file storage and ``sync_interval: always``::

    python deploy/nats/render.py --store-dir /var/lib/nats > /etc/nats/mailwarden.conf
    PROFILE_SVC_PASSWORD=... MAILBOX_SVC_PASSWORD=... nats-server -c /etc/nats/mailwarden.conf

Passwords stay ``$VARIABLE`` references that nats-server reads from its environment, exactly as
the chart's ``<< $VARIABLE >>`` do; ``passwords=`` inlines them (tests only).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

VALUES = Path(__file__).resolve().parents[1] / "helm" / "nats-values.yaml"
_VARIABLE = re.compile(r"^<<\s*\$([A-Z0-9_]+)\s*>>$")


def load_accounts(values_path: Path = VALUES) -> dict[str, Any]:
    values = yaml.safe_load(values_path.read_text())
    accounts: dict[str, Any] = values["config"]["merge"]["accounts"]
    return accounts


def _value(value: Any, passwords: dict[str, str] | None, indent: int) -> str:
    pad = "  " * indent
    if isinstance(value, dict):
        inner = "".join(
            f"{pad}  {json.dumps(k)}: {_value(v, passwords, indent + 1)}\n" for k, v in value.items()
        )
        return "{\n" + inner + pad + "}"
    if isinstance(value, list):
        inner = "".join(f"{pad}  {_value(v, passwords, indent + 1)}\n" for v in value)
        return "[\n" + inner + pad + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    match = _VARIABLE.match(str(value))
    if match:
        name = match.group(1)
        return json.dumps(passwords[name]) if passwords is not None else f"${name}"
    if value == "enabled":
        return "enabled"
    return json.dumps(str(value))


def render(
    *,
    passwords: dict[str, str] | None = None,
    store_dir: str | None = None,
    values_path: Path = VALUES,
) -> str:
    """The config text: JetStream (file storage, fsync before ack) and the chart's accounts."""
    js = ["sync_interval: always"]
    if store_dir is not None:
        js.append(f"store_dir: {json.dumps(store_dir)}")
    accounts = _value(load_accounts(values_path), passwords, 0)
    return "jetstream {\n" + "".join(f"  {line}\n" for line in js) + "}\n" + f"accounts: {accounts}\n"


def variables(values_path: Path = VALUES) -> list[str]:
    """The password variables the config expects in nats-server's environment."""
    text = values_path.read_text()
    return sorted(set(re.findall(r"<<\s*\$([A-Z0-9_]+)\s*>>", text)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store-dir", help="JetStream directory (default: nats-server's own)")
    args = parser.parse_args()
    print(render(store_dir=args.store_dir), end="")


if __name__ == "__main__":
    main()
