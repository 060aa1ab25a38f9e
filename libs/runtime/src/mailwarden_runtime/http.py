"""HTTP conventions shared by the services: field-level 422s that never echo the input."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The error body of every refused request."""

    detail: str
    errors: list[FieldProblem] = []


def problem(status: int, detail: str, errors: list[FieldProblem] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=Problem(detail=detail, errors=errors or []).model_dump())


def field_problems(errors: list[Any]) -> list[FieldProblem]:
    """Turn pydantic errors into named fields; the offending input is never echoed (it may be a secret)."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        out.append(FieldProblem(field=".".join(loc) or "body", message=str(err.get("msg", "invalid"))))
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
        return problem(422, "invalid request", field_problems(list(exc.errors())))

    async def on_domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return problem(exc.status, exc.detail, exc.problems())

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(DomainError, on_domain)
