"""``python -m mailbox_svc.rotate``: re-encrypt every mailbox credential under the primary key.

Run with ``MW_MAILBOX_CREDENTIAL_KEYS=new:...,old:...`` (or the shared ``MW_CREDENTIAL_KEYS``) (new key first) while the service runs; prints the
report as JSON and exits 1 when any credential could not be read.
"""

from __future__ import annotations

import asyncio
import sys

from mailbox_svc.config import Settings
from mailbox_svc.keys import AT_REST_PURPOSE
from mailbox_svc.rotation import rotate_credentials
from mailbox_svc.store.mailboxes import MailboxStore
from mailwarden_runtime.keys import load_keyring
from mailwarden_runtime.mongo import create_client, database


async def main(settings: Settings | None = None) -> int:
    settings = settings or Settings()
    ring = load_keyring(
        settings.credential_keys, "MW_MAILBOX_CREDENTIAL_KEYS", AT_REST_PURPOSE, settings.dev_mode
    )
    client = create_client(settings, "mailbox-svc-rotate")
    try:
        report = await rotate_credentials(MailboxStore(database(client, settings, "mailbox-svc")), ring)
    finally:
        await client.close()
    print(report.model_dump_json(indent=2))
    return 1 if report.unreadable else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
