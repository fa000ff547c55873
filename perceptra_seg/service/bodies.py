"""Request bodies, read only after authentication and parsed off the event loop with bounded cost.

FastAPI parses a declared body *before* it runs any dependency, on the event loop: a 23 MB body with 10⁶ prompts
kept ``/v1/healthz`` waiting for seconds and made even a wrong API key wait for its 401. The inference routes
therefore take the raw :class:`~starlette.requests.Request`: the authentication dependency runs on the headers
alone, then :func:`read_json` / :func:`read_upload` read the body and parse it on a worker thread:

1. a cheap scan counts ``,``, ``[`` and ``{`` bytes — an upper bound of the JSON values in the body. More than
   :func:`value_budget` (what ``server.max_prompts`` prompts of ``server.max_points_per_prompt`` points can need)
   is 413 ``request_too_large`` without parsing anything, so the parser never builds millions of objects;
2. pydantic validates the JSON (422 ``validation_error`` as before, locations under ``body``);
3. the prompt and point counts are checked against the caps (413 ``request_too_large``).

The OpenAPI document still describes each body: :func:`json_body_doc` / :func:`upload_body_doc` give the routes'
``openapi_extra``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from ..config import ServerConfig
from ..exceptions import ImageTooLargeError, InvalidInputError
from .errors import RequestTooLargeError
from .schemas import BoxRequest, PointsRequest, SegmentOptions

__all__ = [
    "NAMED_ENUMS",
    "check_caps",
    "install_named_enums",
    "json_body_doc",
    "multipart_file",
    "parse_json",
    "read_json",
    "read_options",
    "read_upload",
    "upload_body_doc",
    "value_budget",
]

M = TypeVar("M", bound=BaseModel)

#: JSON values one point ``{"x": .., "y": .., "label": ..},`` and one prompt's own syntax may need (generous).
_PER_POINT = 4
_PER_PROMPT = 16
_SLACK = 64


def value_budget(server: ServerConfig) -> int:
    """The most ``,`` / ``[`` / ``{`` bytes a body within the prompt and point caps can contain."""
    return (server.max_prompts + 2) * (_PER_POINT * server.max_points_per_prompt + _PER_PROMPT) + _SLACK


def parse_json(body: bytes | str, model: type[M], server: ServerConfig, *, location: tuple[str, ...] = ("body",)) -> M:
    """Validate ``body`` as ``model`` after the cheap size scan; then check the prompt caps (blocking).

    Raises:
        RequestTooLargeError: more JSON values than :func:`value_budget`, or prompts/points over the caps (413).
        RequestValidationError: malformed JSON or a body that does not fit ``model`` (422).
    """
    data = body.encode() if isinstance(body, str) else body
    budget = value_budget(server)
    values = data.count(b",") + data.count(b"[") + data.count(b"{")
    if values > budget:
        raise RequestTooLargeError(
            f"request body holds about {values} JSON values, more than {server.max_prompts} prompts "
            f"(server.max_prompts) of {server.max_points_per_prompt} points (server.max_points_per_prompt) can need"
        )
    try:
        parsed = model.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": (*location, *e["loc"])} for e in errors]) from None
    check_caps(parsed, server)
    return parsed


def check_caps(parsed: BaseModel, server: ServerConfig) -> None:
    """413 :class:`RequestTooLargeError` when a parsed body has more prompts or points per prompt than the caps."""
    if isinstance(parsed, SegmentOptions):
        prompts = len(parsed.prompts or []) + len(parsed.boxes or []) + (1 if parsed.points else 0)
        points = [len(p.points or []) for p in parsed.prompts or []] + [len(parsed.points or [])]
    elif isinstance(parsed, PointsRequest):
        prompts, points = 1, [len(parsed.points)]
    elif isinstance(parsed, BoxRequest):
        prompts, points = 1, [0]
    else:
        return
    if prompts > server.max_prompts:
        raise RequestTooLargeError(
            f"request has {prompts} prompts, over the limit of {server.max_prompts} (server.max_prompts)"
        )
    most = max(points)
    if most > server.max_points_per_prompt:
        raise RequestTooLargeError(
            f"a prompt has {most} points, over the limit of {server.max_points_per_prompt} "
            "(server.max_points_per_prompt)"
        )


async def read_json(request: Request, model: type[M], server: ServerConfig) -> M:
    """Read the body (after authentication) and :func:`parse_json` it on a worker thread."""
    body = await request.body()
    return await anyio.to_thread.run_sync(partial(parse_json, body, model, server))


async def read_options(text: str, server: ServerConfig) -> SegmentOptions:
    """:func:`parse_json` of an upload's ``request`` field on a worker thread (errors located under it)."""
    return await anyio.to_thread.run_sync(
        partial(parse_json, text, SegmentOptions, server, location=("body", "request"))
    )


async def read_upload(request: Request, server: ServerConfig, max_bytes: int) -> tuple[bytes, str | None]:
    """The multipart ``file`` (at most ``max_bytes``) and the ``request`` field (``None`` when absent).

    Raises:
        RequestValidationError: no ``file`` part (422).
        ImageTooLargeError: the file is over ``max_bytes`` (413).
        InvalidInputError: the body is not a readable multipart form (400).
    """
    async with multipart_file(request, max_fields=8) as (form, file):
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"uploaded image is over the {max_bytes} byte limit")
        options = form.get("request")
        return data, options if isinstance(options, str) else None


@asynccontextmanager
async def multipart_file(request: Request, *, max_fields: int) -> AsyncIterator[tuple[FormData, UploadFile]]:
    """The parsed multipart/form-data body and its ``file`` part; the form (and its spooled files) closed on exit.

    Raises:
        RequestValidationError: no ``file`` part (422).
        InvalidInputError: the body is not a readable multipart form (400).
    """
    try:
        form = await request.form(max_files=1, max_fields=max_fields)
    except (AssertionError, ValueError) as exc:  # starlette: missing python-multipart / bad form
        raise InvalidInputError(f"expected a multipart/form-data body: {exc}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body", "file"), "msg": "Field required", "input": None}]
            )
        yield form, file
    finally:
        await form.close()


#: Enum schemas (``Strategy``, ``OutputFormat``) the documented request bodies refer to by name; added to the
#: OpenAPI document's components by :func:`install_named_enums`.
NAMED_ENUMS: dict[str, dict[str, Any]] = {}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``#/$defs/..`` reference replaced by its definition (the models are not recursive),
    except enums, which become references to ``#/components/schemas/<name>`` (see :data:`NAMED_ENUMS`)."""
    definitions = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[-1]
                others = {k: walk(v) for k, v in node.items() if k != "$ref"}
                if "enum" in definitions[name]:
                    NAMED_ENUMS[name] = definitions[name]
                    return {"$ref": f"#/components/schemas/{name}", **others}
                return {**walk(definitions[name]), **others}
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result = walk(schema)
    assert isinstance(result, dict)
    return result


def install_named_enums(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document hold the :data:`NAMED_ENUMS` its request bodies refer to."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            spec.setdefault("components", {}).setdefault("schemas", {}).update(NAMED_ENUMS)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON body of ``model``."""
    schema = _inline(model.model_json_schema())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def upload_body_doc(*, with_options: bool) -> dict[str, Any]:
    """``openapi_extra`` of a multipart body with ``file`` (and the ``request`` options field)."""
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary", "description": "the image file"}}
    encoding: dict[str, Any] = {"file": {"contentType": "application/octet-stream"}}
    if with_options:  # typed: the options object, sent as a JSON text part
        options = _inline(SegmentOptions.model_json_schema())
        properties["request"] = {**options, "description": "the /v1/segment options (JSON text; default {})"}
        encoding["request"] = {"contentType": "application/json"}
    schema = {"type": "object", "properties": properties, "required": ["file"]}
    content = {"multipart/form-data": {"schema": schema, "encoding": encoding}}
    return {"requestBody": {"required": True, "content": content}}
