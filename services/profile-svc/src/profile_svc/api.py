"""profile-svc's operations, each declared once and served on HTTP and NATS request-reply."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mailwarden_runtime.operations import Bound, Operation, serve
from mailwarden_runtime.service import ServiceRuntime
from profile_svc.admin_api import ADMIN_OPERATIONS, bind_admin
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

NOT_FOUND = {404: "No such profile"}
CONFLICT = {409: "Conflicts with stored state (name taken, profile in use, concurrent change, ...)"}

CREATE = Operation(
    name="create",
    method="POST",
    path="/profiles",
    input=ProfileCreate,
    output=ProfileView,
    permission="profiles:write",
    summary="Create an email server profile",
    errors=CONFLICT,
    status_code=201,
    tags=("profiles",),
)
LIST = Operation(
    name="list",
    method="GET",
    path="/profiles",
    input=ListQuery,
    output=ProfilePage,
    permission="profiles:read",
    summary="List profiles (filter, paginate)",
    tags=("profiles",),
)
GET = Operation(
    name="get",
    method="GET",
    path="/profiles/{profile_id}",
    input=ProfileRef,
    output=ProfileView,
    permission="profiles:read",
    summary="Read a profile",
    errors=NOT_FOUND,
    tags=("profiles",),
)
UPDATE = Operation(
    name="update",
    method="PATCH",
    path="/profiles/{profile_id}",
    input=ProfileUpdateRequest,
    output=ProfileView,
    permission="profiles:write",
    summary="Change some fields; omitted secrets are kept",
    errors={**NOT_FOUND, **CONFLICT},
    tags=("profiles",),
    docs="Only the fields sent change (`null` counts as not sent).",
)
DELETE = Operation(
    name="delete",
    method="DELETE",
    path="/profiles/{profile_id}",
    input=ProfileRef,
    output=DeleteResult,
    permission="profiles:write",
    summary="Delete a profile no mailbox uses",
    errors={**NOT_FOUND, **CONFLICT},
    tags=("profiles",),
)
SETTINGS_GET = Operation(
    name="settings_get",
    method="GET",
    path="/settings",
    input=Empty,
    output=SettingsView,
    permission="settings:read",
    summary="The organisation's email settings",
    tags=("settings",),
)
SETTINGS_PUT = Operation(
    name="settings_put",
    method="PUT",
    path="/settings",
    input=SettingsIn,
    output=SettingsView,
    permission="settings:write",
    summary="Replace the organisation's email settings",
    errors=CONFLICT,
    tags=("settings",),
    docs="An omitted field takes its default.",
)

OPERATIONS: tuple[Operation[Any, Any], ...] = (
    CREATE,
    LIST,
    GET,
    UPDATE,
    DELETE,
    SETTINGS_GET,
    SETTINGS_PUT,
    *ADMIN_OPERATIONS,
)


def bind(ops: Operations) -> list[Bound[Any, Any]]:
    async def get(req: ProfileRef) -> ProfileView:
        return await ops.get(req.profile_id)

    async def update(req: ProfileUpdateRequest) -> ProfileView:
        patch = ProfilePatch.model_validate(req.model_dump(exclude={"profile_id"}, exclude_unset=True))
        return await ops.update(req.profile_id, patch)

    async def delete(req: ProfileRef) -> DeleteResult:
        return await ops.delete(req.profile_id)

    async def settings_get(_: Empty) -> SettingsView:
        return await ops.get_settings()

    return [
        CREATE.bind(ops.create),
        LIST.bind(ops.list),
        GET.bind(get),
        UPDATE.bind(update),
        DELETE.bind(delete),
        SETTINGS_GET.bind(settings_get),
        SETTINGS_PUT.bind(ops.put_settings),
    ]


def serve_operations(runtime: ServiceRuntime, ops: Operations) -> APIRouter:
    """``mailwarden.rpc.profile-svc.<op>`` registered on ``runtime``; the HTTP routes returned."""
    return serve(runtime, [*bind(ops), *bind_admin(runtime, ops.stores.profiles, ops.box.at_rest)])
