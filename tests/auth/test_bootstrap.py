"""`make up`'s administrator token: made once at first start, kept 0600, read by the CLI."""

from __future__ import annotations

import uuid
from pathlib import Path

import nats

from mailwarden_cli.client import read_token
from mailwarden_runtime.auth import Role
from mailwarden_runtime.auth.bootstrap import ensure_admin_token
from mailwarden_runtime.auth.tokens import TokenStore


async def test_the_admin_token_is_made_once_kept_0600_and_read_by_the_cli(
    nats_url: str, tmp_path: Path
) -> None:
    bucket = f"T_BOOT_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "data" / "admin-token.json"
    text = await ensure_admin_token(nats_url, path, bucket=bucket)
    assert text is not None
    assert path.stat().st_mode & 0o777 == 0o600
    assert await ensure_admin_token(nats_url, path, bucket=bucket) is None  # second start: kept, not shown
    assert read_token(None, path) == text
    assert read_token("mwt_explicit", path) == "mwt_explicit"  # MW_TOKEN / --token first
    nc = await nats.connect(nats_url)
    try:
        store = TokenStore(lambda: nc, bucket=bucket)
        principal = await store.verify(text)
        assert principal.roles == frozenset({Role.SYSTEM_ADMIN}) and principal.actor == "token:admin"
        assert len(await store.list()) == 1
    finally:
        await nc.close()
