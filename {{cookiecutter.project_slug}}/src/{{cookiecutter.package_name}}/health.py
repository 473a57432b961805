"""Liveness and readiness probes.

/healthz only says the process answers. /readyz asks each part that depends on something
outside the process (signing keys, replay store) whether it is usable right now; parts register
their check in app.extensions["readiness_checks"].
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, current_app, jsonify

from .problems import problem

blueprint = Blueprint("health", __name__)

ReadinessCheck = Callable[[], bool]


# What jsonify(status="ok") writes, built once: probes and load balancers call this constantly.
HEALTHY = b'{"status":"ok"}\n'


@blueprint.get("/healthz")
def healthz() -> Response:
    return Response(HEALTHY, mimetype="application/json")


@blueprint.get("/readyz")
def readyz() -> Response:
    checks: dict[str, ReadinessCheck] = current_app.extensions.get("readiness_checks", {})
    failing = sorted(name for name, check in checks.items() if not passes(check))
    if failing:
        return problem(503, "Not ready: " + ", ".join(failing) + " unavailable.", failing=failing)
    return jsonify(status="ready", checks=sorted(checks))


def passes(check: ReadinessCheck) -> bool:
    try:
        return bool(check())
    except Exception:  # a check that breaks is a check that fails
        current_app.logger.warning("readiness check failed", exc_info=True)
        return False
