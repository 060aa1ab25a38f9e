"""HTTP conventions shared by the services: field-level 422s that never echo the input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The error body of every refused request."""

    detail: str
    errors: list[FieldProblem] = []


def problem(
    status: int,
    detail: str,
    errors: list[FieldProblem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    content = Problem(detail=detail, errors=errors or []).model_dump()
    return JSONResponse(status_code=status, content=content, headers=headers)


def malformed_json(doc: str | bytes, pos: int) -> FieldProblem:
    """Where a body stops being JSON, as a person counts: line and column, from 1."""
    text = doc.decode(errors="replace") if isinstance(doc, bytes) else doc
    before = text[:pos]
    line = before.count("\n") + 1
    column = pos - (before.rfind("\n") + 1) + 1
    return FieldProblem(field="body", message=f"malformed JSON at line {line} column {column}")


def field_problems(errors: list[Any], body: Any = None) -> list[FieldProblem]:
    """Turn pydantic errors into named fields; the offending input is never echoed (it may be a secret).

    ``body``: the raw text FastAPI could not parse, so a JSON syntax error names its line and column.
    """
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if err.get("type") == "json_invalid" and isinstance(body, (str, bytes)) and len(loc) == 2:
            out.append(malformed_json(body, int(loc[1])))
            continue
        if loc and loc[0] == "body":
            loc = loc[1:]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append(FieldProblem(field=".".join(loc) or "body", message=message))
    return out


class DomainError(Exception):
    """A refused operation with an HTTP status and, where it applies, the field at fault."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field

    def problems(self) -> list[FieldProblem]:
        return [FieldProblem(field=self.field, message=self.detail)] if self.field else []


def install_error_handlers(app: FastAPI) -> None:
    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem(422, "invalid request", field_problems(list(exc.errors()), exc.body))

    async def on_domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return problem(exc.status, exc.detail, exc.problems())

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own answers (an unknown route's 404, a wrong method's 405) in the same body.
        assert isinstance(exc, StarletteHTTPException)
        detail = "no such route" if exc.status_code == 404 else str(exc.detail)
        return problem(exc.status_code, detail, headers=exc.headers)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(StarletteHTTPException, on_http)
