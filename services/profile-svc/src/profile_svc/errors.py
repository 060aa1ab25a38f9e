"""Refusals that name every field at fault, over HTTP and NATS alike."""

from __future__ import annotations

from mailwarden_runtime.http import DomainError, FieldProblem


class FieldsRefused(DomainError):
    """One or more fields break a rule; ``status`` is 422 for bad input, 409 for a conflict with stored state."""

    def __init__(self, problems: list[FieldProblem], status: int = 422, detail: str | None = None) -> None:
        super().__init__(status, detail or "; ".join(f"{p.field}: {p.message}" for p in problems))
        self.field_list = problems

    def problems(self) -> list[FieldProblem]:
        return list(self.field_list)


def refuse(field: str, message: str, status: int = 422) -> FieldsRefused:
    return FieldsRefused([FieldProblem(field=field, message=message)], status=status, detail=message)


def not_found() -> DomainError:
    return DomainError(404, "no such profile", "profile_id")
