"""Every operation declared once, then served on HTTP and on NATS request-reply from that declaration.

An :class:`Operation` is data: its RPC name, HTTP method and path (path parameters are fields of
the input model), input and output models, the statuses it can answer, the permission it needs and
its docs. A service binds each declaration to a handler (``OP.bind(handler)``) and :func:`serve`
answers it on ``mailwarden.rpc.<service>.<name>`` (through ``runtime.rpc``) and on a FastAPI route
whose OpenAPI entry lists every declared status. Both doors call :func:`authorize` before the
handler, so access is checked in one place.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError, create_model

from mailwarden_runtime.auth.authenticator import Authenticator
from mailwarden_runtime.auth.context import current_principal
from mailwarden_runtime.auth.errors import Forbidden
from mailwarden_runtime.auth.permissions import Scope
from mailwarden_runtime.auth.principal import Principal
from mailwarden_runtime.auth.whoami import SIGNED_IN
from mailwarden_runtime.http import Problem
from mailwarden_runtime.rpc import RequestHeaders, rpc_subject
from mailwarden_runtime.service import ServiceRuntime

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Door = Literal["http", "nats"]

INVALID = "Invalid input: each bad field named, nothing stored"
ACCESS_REFUSALS: dict[int, str] = {
    401: "No bearer token, or one that does not verify (expired, revoked, forged)",
    403: "The token's roles lack the operation's permission (or this resource is not the caller's own)",
    503: "The token cannot be checked now (the token store or the identity provider's keys do not answer)",
}
"""What :func:`authorize` can answer on every operation (401, 403, 503), listed with its statuses."""
_PATH_PARAM = re.compile(r"{(\w+)}")
_QUERY_METHODS = frozenset({"GET", "DELETE"})


@dataclass(frozen=True)
class Operation(Generic[In, Out]):
    """One operation of a service, as both doors serve it and the reference documents it."""

    name: str
    """The RPC operation: ``mailwarden.rpc.<service>.<name>``."""
    method: Method
    path: str
    """HTTP path; each ``{param}`` is a field of ``input``."""
    input: type[In]
    output: type[Out]
    permission: str
    """What the caller needs (the shared vocabulary, e.g. ``mailboxes:test``); checked by :func:`authorize`.
    ``auth.whoami.SIGNED_IN``: any verified caller (who am I)."""
    summary: str
    errors: Mapping[int, str] = field(default_factory=dict)
    """Refusals it can answer (``Problem`` bodies) and when; 422 for invalid input is implied."""
    status_code: int = 200
    """HTTP status of success; with 204 HTTP answers no body (NATS still gets ``output``)."""
    tags: tuple[str, ...] = ()
    docs: str = ""
    body: str | None = None
    """The input field that is the whole HTTP body; default: the input's fields not in the path."""
    http_items: bool = False
    """HTTP answers the output's ``items`` as a bare JSON list (the shape that API had first)."""
    owner_scoped: bool = False
    """A role that grants ``permission`` only on the caller's own things (a mailbox owner's mailbox
    and alerts wall, an integration's granted mailboxes) may call it: the handler then admits only
    those (``mailwarden_runtime.auth.require_mailbox`` and the like). Otherwise such a role gets 403."""

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAM.findall(self.path))

    @property
    def takes_input(self) -> bool:
        return bool(self.input.model_fields)

    def statuses(self) -> dict[int, str]:
        """Every status it can answer, success first, each with when."""
        refusals = ACCESS_REFUSALS | dict(self.errors)
        if self.takes_input:
            refusals.setdefault(422, INVALID)
        return {self.status_code: self.summary, **dict(sorted(refusals.items()))}

    def subject(self, service: str) -> str:
        return rpc_subject(service, self.name)

    def bind(self, handler: Callable[[In], Awaitable[Out]]) -> Bound[In, Out]:
        return Bound(self, handler)


@dataclass(frozen=True)
class Bound(Generic[In, Out]):
    """An operation with the handler that does it."""

    operation: Operation[In, Out]
    handler: Callable[[In], Awaitable[Out]]


@dataclass(frozen=True)
class Call:
    """Who asks for what, through which door: what :func:`authorize` decides on."""

    service: str
    operation: Operation[Any, Any]
    door: Door
    headers: Mapping[str, str]
    """The request's headers: HTTP headers, or the NATS message's headers (e.g. a token)."""


Authorize = Callable[[Call, BaseModel | None], Awaitable[Principal | None]]
"""Checks a call before its input is read (``request`` is None then: a caller without the right
gets 401/403, never a validation error that describes the input)."""


async def authorize(call: Call, request: BaseModel | None, authenticator: Authenticator) -> Principal:
    """The one place access is checked: before every handler, on both doors.

    The caller is the verified bearer token of the request (HTTP: already verified by the app's
    middleware; NATS: the message's ``Authorization`` header): 401 without one. The operation's
    permission must be granted on everything, or (``owner_scoped`` operations) on the caller's own
    things, which the handler then narrows to: 403 otherwise.
    """
    del request  # the resource check needs the stored document: the handler does it (owner_scoped)
    principal = current_principal() if call.door == "http" else None
    if principal is None:
        principal = await authenticator.authenticate(call.headers)
    if call.operation.permission == SIGNED_IN:  # who am I: any verified caller
        return principal
    scope = principal.scope(call.operation.permission)  # type: ignore[arg-type]
    if scope is Scope.ALL or (scope is Scope.OWN and call.operation.owner_scoped):
        return principal
    raise Forbidden(f"needs {call.operation.permission}")


def authorizer(runtime: ServiceRuntime) -> Authorize:
    """:func:`authorize` with the service's token verifier."""

    async def check(call: Call, request: BaseModel | None) -> Principal:
        return await authorize(call, request, runtime.authenticator)

    return check


def serve(
    runtime: ServiceRuntime, bound: Iterable[Bound[Any, Any]], check: Authorize | None = None
) -> APIRouter:
    """Answer each operation on NATS (registered on ``runtime`` now) and on HTTP (the router returned)."""
    check = check or authorizer(runtime)
    router = APIRouter()
    for item in bound:
        _serve_rpc(runtime, item, check)
        _serve_http(router, runtime.name, item, check)
    return router


def _serve_rpc(runtime: ServiceRuntime, item: Bound[In, Out], check: Authorize) -> None:
    op, handler = item.operation, item.handler

    async def admit(headers: RequestHeaders) -> Principal | None:
        return await check(Call(runtime.name, op, "nats", headers), None)

    async def answer(request: In, headers: RequestHeaders) -> Out:
        return await handler(request)  # the caller admitted is current (runtime.rpc's admit)

    # The runtime documents an operation (AsyncAPI) from its handler's docstring and return type.
    answer.__doc__ = op.summary
    answer.__annotations__ = {"request": op.input, "headers": RequestHeaders, "return": op.output}
    runtime.rpc(op.name, op.input, answer, with_headers=True, admit=admit)


# ------------------------------------------------------------------------------------------------ HTTP


def http_part(op: Operation[Any, Any]) -> type[BaseModel] | None:
    """The model HTTP reads from the body (or the query, for GET and DELETE) besides the path.

    The input itself when nothing is in the path; else the input's base class holding exactly the
    other fields (so the OpenAPI document keeps its name), else a model derived from the input.
    """
    if op.body is not None:
        part = op.input.model_fields[op.body].annotation
        if not (isinstance(part, type) and issubclass(part, BaseModel)):
            raise TypeError(f"{op.name}: body field {op.body} is not a model")
        return part
    path = set(op.path_params)
    rest = {name: f for name, f in op.input.model_fields.items() if name not in path}
    if not rest:
        return None
    if not path:
        return op.input
    for base in op.input.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, BaseModel) and set(base.model_fields) == set(rest):
            return base
    derived: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{op.input.__name__}{'Query' if op.method in _QUERY_METHODS else 'Body'}",
        __config__=op.input.model_config,
        **{name: (f.annotation, f) for name, f in rest.items()},
    )
    return derived


def _path_annotation(op: Operation[Any, Any], name: str) -> Any:
    spec = op.input.model_fields.get(name)
    if spec is None or not spec.is_required():
        raise TypeError(f"{op.name}: path parameter {name} is not a required field of {op.input.__name__}")
    return Annotated.__class_getitem__((spec.annotation, *spec.metadata, Path(description=spec.description)))  # type: ignore[attr-defined]


def _serve_http(router: APIRouter, service: str, item: Bound[In, Out], check: Authorize) -> None:
    op, handler = item.operation, item.handler
    part = http_part(op)
    params = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    params += [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=_path_annotation(op, n))
        for n in op.path_params
    ]
    if part is not None:
        where = Query() if op.method in _QUERY_METHODS else Body()
        # A POST whose every field is optional may come without a body (POST /mailboxes/{id}/test).
        optional = op.method == "POST" and not any(f.is_required() for f in part.model_fields.values())
        annotation: Any = Annotated[part | None, where] if optional else Annotated[part, where]
        default = None if optional else inspect.Parameter.empty
        params.append(
            inspect.Parameter("part", inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        )

    async def admit(request: Request) -> None:
        """A dependency, so it runs before FastAPI reads the path, query and body."""
        await check(Call(service, op, "http", dict(request.headers)), None)

    async def endpoint(request: Request, **values: Any) -> Any:
        parsed = _input(op, values)
        result = await handler(parsed)  # the caller is current (the app's AuthMiddleware)
        if op.status_code == 204:
            return Response(status_code=204)
        return getattr(result, "items") if op.http_items else result  # noqa: B009

    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = op.name.replace(".", "_")
    router.add_api_route(
        op.path,
        endpoint,
        methods=[op.method],
        status_code=op.status_code,
        response_model=_response_model(op),
        response_class=Response if op.status_code == 204 else JSONResponse,
        responses={s: {"model": Problem, "description": d} for s, d in op.statuses().items() if s >= 400},
        summary=op.summary,
        description=op.docs,
        tags=list(op.tags),
        openapi_extra={"x-rpc-subject": op.subject(service), "x-permission": op.permission},
        dependencies=[Depends(admit)],
    )


def _response_model(op: Operation[Any, Any]) -> Any:
    if op.status_code == 204:
        return None
    if op.http_items:
        return op.output.model_fields["items"].annotation
    return op.output


def _input(op: Operation[In, Any], values: Mapping[str, Any]) -> In:
    """The input model from the path parameters and the body or query part."""
    part = values.get("part")
    if isinstance(part, op.input) and not op.path_params:
        return part
    data: dict[str, Any] = {name: values[name] for name in op.path_params}
    if op.body is not None:
        data[op.body] = part
    elif isinstance(part, BaseModel):
        data.update({name: getattr(part, name) for name in part.model_fields_set})
    try:
        return op.input.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
