"""The OpenAPI 3.1 document of the registry, written by hand around generated schemas.

Response schemas come from the pydantic models that render the responses, so the two cannot
drift. Paths are listed here once; a unit test checks that every route of the app is documented.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from agentgw import __version__
from agentgw.model.status import ProfileList, ProfileStatus
from agentgw.registry.documents import ErrorBody, Health, ReleaseList, SandboxReport

REF = "#/components/schemas/{model}"
PROFILE_PATTERN = "^[a-z][a-z0-9]{0,24}$"

MODELS: tuple[type[BaseModel], ...] = (
    Health, ProfileList, ProfileStatus, ReleaseList, SandboxReport, ErrorBody,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(media: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref(ErrorBody), description)


# Every protected route can answer these.
DENIED = {
    "401": _error("TCP only: missing or wrong bearer token"),
    "403": _error("the caller is neither root, the admin group, nor a profile's user"),
    "503": _error("the host's configuration or state could not be read"),
}
PROFILE_PARAM = {
    "name": "profile",
    "in": "path",
    "required": True,
    "description": "a profile name",
    "schema": {"type": "string", "pattern": PROFILE_PATTERN},
}

# path -> (summary, 200 response, protected, has the profile parameter)
ROUTES: dict[str, tuple[str, dict[str, Any], bool, bool]] = {
    "/": ("The profiles table as an HTML page (no external assets)",
          _text("text/html", "the page"), True, False),
    "/health": ("Liveness of the registry (open to every caller)",
                _json(_ref(Health), "the registry is serving"), False, False),
    "/v1/profiles": ("The status of every profile the caller may see",
                     _json(_ref(ProfileList), "the profiles"), True, False),
    "/v1/profiles/{profile}": ("The status of one profile",
                               _json(_ref(ProfileStatus), "the profile"), True, True),
    "/v1/profiles/{profile}/proofs": (
        "The last signed isolation proof record of a profile, byte for byte as stored",
        _json({"type": "object"}, "the proof record (verify with 'agentgw attest verify')"),
        True,
        True,
    ),
    "/v1/releases": ("Releases on the host (for a profile's user: the ones it uses)",
                     _json(_ref(ReleaseList), "the releases"), True, False),
    "/v1/sandbox": ("The microVM sandbox: backend, last self-test, recent execs",
                    _json(_ref(SandboxReport), "the sandbox report"), True, False),
    "/metrics": ("Per-profile metrics in Prometheus text format",
                 _text("text/plain", "Prometheus exposition format 0.0.4"), True, False),
    "/openapi.json": ("This document (open to every caller)",
                      _json({"type": "object"}, "the OpenAPI document"), False, False),
}


def _operation(path: str, method: str) -> dict[str, Any]:
    summary, ok, protected, by_profile = ROUTES[path]
    responses: dict[str, Any] = {"200": ok}
    if method == "head":
        responses = {"200": {"description": ok["description"] + " (headers only)"}}
    if protected:
        responses.update(DENIED)
    if by_profile:
        responses["404"] = _error("no such profile, or not visible to the caller")
    op: dict[str, Any] = {
        "operationId": method + path.replace("/", "_").replace("{", "").replace("}", ""),
        "summary": summary,
        "responses": responses,
    }
    if by_profile:
        op["parameters"] = [PROFILE_PARAM]
    if not protected:
        op["security"] = []
    return op


def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "serialization") for m in MODELS], ref_template=REF
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentgw registry",
            "version": __version__,
            "description": (
                "Read-only view of an agentgw host. Only GET and HEAD exist; every other method "
                "is answered 405. On the unix socket the caller is identified by its kernel peer "
                "credentials (SO_PEERCRED): root and the admin group see every profile, a "
                "profile's own user (agent-<profile>) sees only that profile, anyone else gets "
                "403. On TCP a bearer token is required and grants the full view."
            ),
        },
        "paths": {
            path: {method: _operation(path, method) for method in ("get", "head")}
            for path in ROUTES
        },
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # A bearer token on TCP; nothing on the unix socket (the kernel vouches for the peer).
        "security": [{"bearer": []}, {}],
    }
