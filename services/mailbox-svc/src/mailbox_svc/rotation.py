"""Key rotation: re-encrypt every stored credential under the primary key, online.

Each mailbox's ciphertexts are swapped only if unchanged since they were read, so a password set
meanwhile is never overwritten. Counts are reported per old key id; unreadable ones are named.
"""

from __future__ import annotations

import logging

from contracts.models import SealedSecret
from mailbox_svc.credentials import CredentialsUnreadable, open_login, reseal_stored
from mailbox_svc.documents import SealedLogins
from mailbox_svc.models import RotationReport
from mailbox_svc.store.mailboxes import MailboxStore
from mailwarden_runtime.crypto import KeyRing

log = logging.getLogger(__name__)

PAGE = 200


async def rotate_credentials(mailboxes: MailboxStore, ring: KeyRing) -> RotationReport:
    report = RotationReport(
        primary_kid=ring.primary_kid,
        examined=0,
        rotated={},
        already_primary=0,
        unreadable=0,
        unreadable_mailboxes=[],
    )
    after: str | None = None
    while True:
        docs = await mailboxes.all_with_credentials(after, PAGE)
        if not docs:
            break
        after = docs[-1].id
        for doc in docs:
            await _rotate_one(mailboxes, ring, doc, report)
    log.info(
        "credential rotation finished",
        extra={"rotated": report.rotated, "unreadable": report.unreadable, "primary": report.primary_kid},
    )
    return report


async def _rotate_one(
    mailboxes: MailboxStore, ring: KeyRing, doc: SealedLogins, report: RotationReport
) -> None:
    for _ in range(3):
        new: dict[str, SealedSecret | None] = dict(doc.credentials)
        rotated: dict[str, int] = {}
        bad = False
        for direction, stored in doc.credentials.items():
            if stored is None:
                continue
            report.examined += 1
            if stored.kid == ring.primary_kid:
                try:  # opened too: a ciphertext that no longer opens is reported, whatever its key
                    open_login(ring, doc.id, direction, stored)
                except CredentialsUnreadable:
                    bad = True
                    report.unreadable += 1
                    continue
                report.already_primary += 1
                continue
            try:
                new[direction] = reseal_stored(ring, doc.id, direction, stored)
            except CredentialsUnreadable:
                bad = True
                report.unreadable += 1
                continue
            rotated[stored.kid] = rotated.get(stored.kid, 0) + 1
        if bad and doc.id not in report.unreadable_mailboxes:
            report.unreadable_mailboxes.append(doc.id)
        if not rotated or await mailboxes.swap_credentials(doc, new):
            for kid, n in rotated.items():
                report.rotated[kid] = report.rotated.get(kid, 0) + n
            return
        fresh = await mailboxes.credentials_of(doc.id)
        if fresh is None:
            return
        doc = fresh
