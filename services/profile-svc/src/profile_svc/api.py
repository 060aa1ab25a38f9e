"""HTTP routes and NATS request-reply operations: two doors to the same :class:`Operations`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from mailwarden_runtime.http import Problem
from mailwarden_runtime.service import ServiceRuntime
from profile_svc.models import (
    DeleteResult,
    Empty,
    ListQuery,
    ProfileCreate,
    ProfilePage,
    ProfilePatch,
    ProfileRef,
    ProfileUpdateRequest,
    ProfileView,
    SettingsIn,
    SettingsView,
)
from profile_svc.operations import Operations

ProfileId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": Problem, "description": "No such profile"},
    409: {"model": Problem, "description": "Conflicts with stored state (name taken, profile in use, ...)"},
    422: {"model": Problem, "description": "Invalid input; each bad field named, nothing stored"},
}


def http_router(ops: Operations) -> APIRouter:
    router = APIRouter(responses=ERRORS)

    @router.post("/profiles", status_code=201, tags=["profiles"], summary="Create an email server profile")
    async def create_profile(body: ProfileCreate) -> ProfileView:
        return await ops.create(body)

    @router.get("/profiles", tags=["profiles"], summary="List profiles (filter, paginate)")
    async def list_profiles(q: Annotated[ListQuery, Query()]) -> ProfilePage:
        return await ops.list(q)

    @router.get("/profiles/{profile_id}", tags=["profiles"], summary="Read a profile")
    async def get_profile(profile_id: ProfileId) -> ProfileView:
        return await ops.get(profile_id)

    @router.patch(
        "/profiles/{profile_id}", tags=["profiles"], summary="Change some fields; omitted secrets are kept"
    )
    async def update_profile(profile_id: ProfileId, body: ProfilePatch) -> ProfileView:
        return await ops.update(profile_id, body)

    @router.delete("/profiles/{profile_id}", tags=["profiles"], summary="Delete a profile no mailbox uses")
    async def delete_profile(profile_id: ProfileId) -> DeleteResult:
        return await ops.delete(profile_id)

    @router.get("/settings", tags=["settings"], summary="The organisation's email settings")
    async def get_settings() -> SettingsView:
        return await ops.get_settings()

    @router.put("/settings", tags=["settings"], summary="Replace the organisation's email settings")
    async def put_settings(body: SettingsIn) -> SettingsView:
        return await ops.put_settings(body)

    return router


def register_rpc(runtime: ServiceRuntime, ops: Operations) -> None:
    """``mailwarden.rpc.profile-svc.<op>`` for every operation, with the HTTP API's bodies."""

    async def create(req: ProfileCreate) -> ProfileView:
        return await ops.create(req)

    async def get(req: ProfileRef) -> ProfileView:
        return await ops.get(req.profile_id)

    async def list_(req: ListQuery) -> ProfilePage:
        return await ops.list(req)

    async def update(req: ProfileUpdateRequest) -> ProfileView:
        patch = ProfilePatch.model_validate(req.model_dump(exclude={"profile_id"}, exclude_unset=True))
        return await ops.update(req.profile_id, patch)

    async def delete(req: ProfileRef) -> DeleteResult:
        return await ops.delete(req.profile_id)

    async def settings_get(_: Empty) -> SettingsView:
        return await ops.get_settings()

    async def settings_put(req: SettingsIn) -> SettingsView:
        return await ops.put_settings(req)

    runtime.rpc("create", ProfileCreate, create)
    runtime.rpc("get", ProfileRef, get)
    runtime.rpc("list", ListQuery, list_)
    runtime.rpc("update", ProfileUpdateRequest, update)
    runtime.rpc("delete", ProfileRef, delete)
    runtime.rpc("settings_get", Empty, settings_get)
    runtime.rpc("settings_put", SettingsIn, settings_put)
