"""Issuing API tokens from outside the services: the first administrator token, test fixtures.

``python -m mailwarden_runtime.auth.bootstrap --nats URL --file PATH`` makes an administrator
token at first start: stored hashed in the token bucket, its text written once to ``PATH``
(0600) and printed with how to use it. If ``PATH`` exists it does nothing: the token was made.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import nats
from nats.aio.client import Client

from mailwarden_runtime.auth.permissions import Permission, Role
from mailwarden_runtime.auth.tokens import TokenStore, dump_token_file, new_token

ADMIN_TTL = timedelta(days=365)


async def issue_token(
    nats_url: str,
    subject: str = "admin",
    roles: list[Role] | None = None,
    *,
    ttl: timedelta = timedelta(days=1),
    mailboxes: list[str] | None = None,
    scopes: list[Permission] | None = None,
    description: str = "",
    bucket: str = "MW_API_TOKENS",
) -> str:
    """A new token stored (hashed) in ``bucket`` of the NATS at ``nats_url``; returns its text."""
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        store = TokenStore(lambda: nc, bucket=bucket)
        text, record = new_token(
            subject,
            roles or [Role.SYSTEM_ADMIN],
            ttl=ttl,
            mailboxes=mailboxes,
            scopes=scopes,
            description=description,
            created_by="bootstrap",
        )
        await store.put(record)
        return text
    finally:
        await nc.close()


async def issue_on(nc: Client, subject: str = "admin", roles: list[Role] | None = None) -> str:
    """A day's token on an open connection (test fixtures)."""
    text, record = new_token(
        subject, roles or [Role.SYSTEM_ADMIN], ttl=timedelta(days=1), created_by="bootstrap"
    )
    await TokenStore(lambda: nc).put(record)
    return text


def write_secret_file(path: Path, content: str) -> None:
    """Create ``path`` readable by its owner only (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(content)


async def ensure_admin_token(nats_url: str, path: Path, bucket: str = "MW_API_TOKENS") -> str | None:
    """The text of a new administrator token if ``path`` did not exist, else None."""
    if path.exists():  # noqa: ASYNC240 (one stat at start)
        return None
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        store = TokenStore(lambda: nc, bucket=bucket)
        text, record = new_token(
            "admin",
            [Role.SYSTEM_ADMIN],
            ttl=ADMIN_TTL,
            description="administrator token made at first start",
            created_by="bootstrap",
        )
        await store.put(record)
    finally:
        await nc.close()
    write_secret_file(path, dump_token_file(text, record))
    return text


def usage_text(path: Path, text: str) -> str:
    return (
        f"An administrator API token was created (shown once; kept 0600 in {path}):\n\n"
        f"    {text}\n\n"
        "The CLI reads it from there (or from MW_TOKEN). Over HTTP: -H 'Authorization: Bearer <token>';\n"
        "over NATS request-reply: the same header on the request message.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nats", default=os.environ.get("MW_NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--file", type=Path, required=True, help="where the token is kept (0600)")
    args = parser.parse_args(argv)
    text = asyncio.run(ensure_admin_token(args.nats, args.file))
    if text is not None:
        sys.stdout.write(usage_text(args.file, text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
