"""Example API (/api/v1) protected by bearer tokens and scopes.

The item store is in memory and per app (and so per gunicorn worker): it shows the
validation and authorization patterns, it is not a database. It keeps the newest
MAX_ITEMS items so that the demo cannot be used to exhaust memory.
"""

from __future__ import annotations

import json
import math
import threading
import unicodedata
import uuid
from collections import deque
from typing import Any

from flask import Blueprint, current_app, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, UnprocessableEntity, UnsupportedMediaType

from .bearer import current_principal, require_scopes

MAX_ITEMS = 1000
MAX_NAME_LENGTH = 200

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")


class ItemStore:
    """Thread-safe in-memory list of items (gunicorn threads share it)."""

    def __init__(self) -> None:
        self._items: deque[dict[str, str]] = deque(maxlen=MAX_ITEMS)
        self._lock = threading.Lock()

    def add(self, name: str, created_by: str) -> dict[str, str]:
        item = {"id": str(uuid.uuid4()), "name": name, "created_by": created_by}
        with self._lock:
            self._items.append(item)
        return dict(item)

    def all(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(item) for item in self._items]


@blueprint.get("/me")
@require_scopes()
def me() -> ResponseReturnValue:
    principal = current_principal()
    return {
        "sub": principal.sub,
        "scopes": sorted(principal.scopes),
        "client_id": principal.client_id,
    }


@blueprint.get("/items")
@require_scopes("items:read")
def list_items() -> ResponseReturnValue:
    return {"items": _store().all()}


@blueprint.post("/items")
@require_scopes("items:write")
def create_item() -> ResponseReturnValue:
    name = _validated_name(_json_body())
    return _store().add(name, created_by=current_principal().sub), 201


def _store() -> ItemStore:
    store = current_app.extensions.get("api_items")
    if not isinstance(store, ItemStore):
        store = current_app.extensions.setdefault("api_items", ItemStore())
    return store


def _json_body() -> Any:
    if not request.is_json:
        raise UnsupportedMediaType("Send the item as application/json")
    try:
        return json.loads(
            request.get_data().decode("utf-8"),
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The request body is not valid JSON") from None
    except RecursionError:
        # "[" * 100000 fits in the body limit; the parser gives up on it with RecursionError,
        # which is the client's doing, not a server fault.
        raise BadRequest("The request body nests too deeply") from None


def _refuse_constant(name: str) -> float:
    # NaN and Infinity are Python's extension, not JSON (RFC 8259 section 6).
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _validated_name(body: Any) -> str:
    if not isinstance(body, dict) or set(body) != {"name"}:
        raise UnprocessableEntity('The body must be a JSON object with exactly one member, "name"')
    name = body["name"]
    if not isinstance(name, str):
        raise UnprocessableEntity('"name" must be a string')
    # The published schema's maxLength counts the name as sent, so the limit does too.
    if len(name) > MAX_NAME_LENGTH:
        raise UnprocessableEntity(f'"name" must have at most {MAX_NAME_LENGTH} characters')
    name = name.strip()
    if not name:
        raise UnprocessableEntity('"name" must not be blank')
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise UnprocessableEntity('"name" must not contain control characters')
    return name
