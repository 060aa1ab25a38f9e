"""The error catalog: every code a test can end in, what it means and what to do (from ``contracts``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from contracts.errors import CATALOG, WARNING_MESSAGES
from mailwarden_console.web import Signed

router = APIRouter()


@router.get("/errors", response_class=HTMLResponse)
async def catalog(ctx: Signed, scope: str = "", q: str = "") -> HTMLResponse:
    needle = q.strip().lower()
    rows = [
        (code.value, spec)
        for code, spec in CATALOG.items()
        if (not scope or spec.scope == scope)
        and (not needle or needle in f"{code.value} {spec.message} {spec.remediation}".lower())
    ]
    warnings = sorted((code.value, text) for code, text in WARNING_MESSAGES.items())
    return ctx.render("errors.html", rows=rows, warnings=warnings, scope=scope, q=q)
