"""N benchmark users: one passwd-file for the servers, and the client's view with some wrong passwords."""

from __future__ import annotations

import json
import os
import random
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Mailbox", "client_mailboxes", "load_mailboxes", "make_users", "save_mailboxes"]

DOMAIN = "mail.test"


@dataclass(frozen=True, slots=True)
class Mailbox:
    """What a client knows of a mailbox; `expect_ok` is False where we give it a wrong password."""

    user: str
    password: str
    expect_ok: bool

    @property
    def address(self) -> str:
        return f"{self.user}@{DOMAIN}"


def make_users(n: int) -> dict[str, str]:
    """`n` users u000001... with random valid passwords (one dict: one passwd-file write)."""
    return {f"u{i:06d}": secrets.token_urlsafe(12) for i in range(1, n + 1)}


def client_mailboxes(users: dict[str, str], wrong_fraction: float, seed: int = 8) -> list[Mailbox]:
    """The client's list: exactly round(N x fraction) mailboxes, chosen at random, get a wrong password."""
    if not 0 <= wrong_fraction <= 1:
        raise ValueError("wrong_fraction must be within 0..1")
    names = list(users)
    wrong = set(random.Random(seed).sample(range(len(names)), round(len(names) * wrong_fraction)))
    return [
        Mailbox(name, users[name] + ("-wrong" if i in wrong else ""), i not in wrong)
        for i, name in enumerate(names)
    ]


def save_mailboxes(path: Path, mailboxes: list[Mailbox]) -> None:
    """Write the list for a client process; 0600 from the start (it holds passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump([[m.user, m.password, m.expect_ok] for m in mailboxes], fh)


def load_mailboxes(path: Path) -> list[Mailbox]:
    """Read what `save_mailboxes` wrote."""
    rows = json.loads(path.read_text())
    return [Mailbox(str(u), str(p), bool(ok)) for u, p, ok in rows]
