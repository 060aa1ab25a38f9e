"""Key rotation of profile logins: re-encrypt every one under the primary key, online, and open
every ciphertext (those already on the primary key too) so what no longer opens is reported."""

from __future__ import annotations

import logging

from pydantic import BaseModel

from mailwarden_runtime.crypto import KeyRing, SealError
from profile_svc.credentials import aad
from profile_svc.documents import ProfileLogins
from profile_svc.store.profiles import ProfileStore

log = logging.getLogger(__name__)
PAGE = 200


class ProfileRotationReport(BaseModel):
    primary_kid: str
    examined: int = 0
    rotated: dict[str, int] = {}
    already_primary: int = 0
    unreadable: int = 0
    unreadable_profiles: list[str] = []


async def rotate_profile_credentials(profiles: ProfileStore, ring: KeyRing) -> ProfileRotationReport:
    report = ProfileRotationReport(primary_kid=ring.primary_kid)
    after: str | None = None
    while docs := await profiles.with_credentials(after, PAGE):
        after = docs[-1].id
        for doc in docs:
            await _rotate_one(profiles, ring, doc, report)
    log.info(
        "profile credential rotation finished", extra={"rotated": report.rotated, "bad": report.unreadable}
    )
    return report


async def _rotate_one(
    profiles: ProfileStore, ring: KeyRing, doc: ProfileLogins, report: ProfileRotationReport
) -> None:
    profile_id = doc.id
    new = dict(doc.credentials)
    rotated: dict[str, int] = {}
    for direction, sealed in doc.credentials.items():
        report.examined += 1
        binding = aad(profile_id, direction)
        try:
            plain = ring.open(sealed, binding)  # opened even when on the primary key: is it readable?
        except SealError:
            report.unreadable += 1
            if profile_id not in report.unreadable_profiles:
                report.unreadable_profiles.append(profile_id)
            continue
        if sealed.kid == ring.primary_kid:
            report.already_primary += 1
            continue
        new[direction] = ring.seal(plain, binding)
        rotated[sealed.kid] = rotated.get(sealed.kid, 0) + 1
    if rotated and await profiles.swap_credentials(doc, new):
        for kid, n in rotated.items():
            report.rotated[kid] = report.rotated.get(kid, 0) + n
