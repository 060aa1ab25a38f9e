"""HTML forms to API bodies: field names are the API's dotted paths, so its 422s land next to them."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData


def nest(
    form: FormData, *, ints: set[str], floats: set[str], bools: set[str], skip: set[str]
) -> dict[str, Any]:
    """``incoming.port=993`` → ``{"incoming": {"port": 993}}``; empty fields are left out.

    Check boxes are sent as ``true`` or, absent from the form, ``false``. A number that does not
    parse is passed on as text, so the service names the field in its refusal.
    """
    body: dict[str, Any] = {}
    for name in bools:
        _put(body, name, form.get(name) == "true")
    for name, raw in form.multi_items():
        if name in skip or name in bools or not isinstance(raw, str) or not raw.strip():
            continue
        value: Any = raw.strip()
        if name in ints:
            value = _number(value, int)
        elif name in floats:
            value = _number(value, float)
        _put(body, name, value)
    return body


def _number(value: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value)
    except ValueError:
        return value


def _put(body: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The reverse of :func:`nest`, to fill a form from a stored object."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out
