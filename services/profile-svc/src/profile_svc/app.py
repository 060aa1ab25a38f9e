"""The profile-svc application: ``uvicorn --factory profile_svc.app:create_app``."""

from __future__ import annotations

from fastapi import FastAPI

from mailwarden_runtime.keys import load_keyring
from mailwarden_runtime.service import ServiceRuntime
from profile_svc.api import serve_operations
from profile_svc.config import ProfileSettings
from profile_svc.credentials import AT_REST_PURPOSE, CredentialBox
from profile_svc.handlers import register_handlers
from profile_svc.operations import Operations
from profile_svc.store import OUTBOX_COLLECTIONS, Stores

SERVICE = "profile-svc"


def create_app(settings: ProfileSettings | None = None) -> FastAPI:
    """Build the app; refuses (raises) without key rings outside dev mode. Nothing connects until start."""
    settings = settings or ProfileSettings()
    box = CredentialBox(
        at_rest=load_keyring(
            settings.credential_keys, "MW_PROFILE_CREDENTIAL_KEYS", AT_REST_PURPOSE, settings.dev_mode
        ),
        transit=load_keyring(settings.transit_keys, "MW_TRANSIT_KEYS", "transit", settings.dev_mode),
    )
    runtime = ServiceRuntime(SERVICE, settings, outbox_collections=OUTBOX_COLLECTIONS)
    stores = Stores.on(runtime.db)
    ops = Operations(stores, box, runtime.envelope, runtime.wake_relay)

    async def prepare() -> None:
        await stores.ensure_indexes()
        await ops.ensure_settings()
        await ops.sync_default_flags()

    runtime.on_startup(prepare)
    register_handlers(runtime, ops)
    app = runtime.http_app(title=f"mailwarden {SERVICE}", routers=[serve_operations(runtime, ops)])
    app.state.operations = ops
    return app
