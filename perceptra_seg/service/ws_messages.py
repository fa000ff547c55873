"""The ``/v1/ws`` protocol: the client's messages (pydantic models, one per ``type``), their parser and the error
message the server sends (see docs/rest.md for the whole protocol)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..exceptions import InvalidInputError
from .schemas import Box, PointIn

__all__ = [
    "AuthMessage",
    "ClientMessage",
    "DeleteObjectMessage",
    "ExportMessage",
    "ImageIdMessage",
    "ImageMessage",
    "PromptMessage",
    "ResetMessage",
    "UndoMessage",
    "error_message",
    "invalid_message",
    "parse_message",
]

_ObjectId = Annotated[int, Field(ge=0, le=2**31 - 1, description="the client's id of the object")]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuthMessage(_Message):
    type: Literal["auth"]
    api_key: str = Field(min_length=1, max_length=4096)


class ImageMessage(_Message):
    type: Literal["image"]
    image: str = Field(min_length=1, description="base64 or a data: URI (a URL when the server allows URL images)")


class ImageIdMessage(_Message):
    type: Literal["image_id"]
    image_id: str = Field(pattern=r"^[0-9a-f]{32}$")


class PromptMessage(_Message):
    type: Literal["prompt"]
    object: _ObjectId
    points: list[PointIn] = Field(default_factory=list, description="added to the object's earlier clicks")
    box: Box | None = Field(None, description="[x1, y1, x2, y2]; replaces the object's earlier box")


class UndoMessage(_Message):
    type: Literal["undo"]


class ResetMessage(_Message):
    type: Literal["reset"]


class DeleteObjectMessage(_Message):
    type: Literal["delete_object"]
    object: _ObjectId


class ExportMessage(_Message):
    type: Literal["export"]
    coco_image_id: int = Field(1, ge=0, description="image_id written into every COCO record")
    category_id: int = Field(1, ge=0, description="category_id written into every COCO record")


ClientMessage = Annotated[
    AuthMessage
    | ImageMessage
    | ImageIdMessage
    | PromptMessage
    | UndoMessage
    | ResetMessage
    | DeleteObjectMessage
    | ExportMessage,
    Field(discriminator="type"),
]
_PARSER: TypeAdapter[Any] = TypeAdapter(ClientMessage)


def error_message(code: str, message: str, retry_after: int | None = None) -> dict[str, Any]:
    """``{"type": "error", "code", "message"}`` (+ ``retry_after`` seconds)."""
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if retry_after is not None:
        body["retry_after"] = max(1, int(retry_after))
    return body


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        location = ".".join(str(p) for p in error.get("loc", ())) or "message"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def parse_message(text: str) -> Any:
    """One client message from JSON text.

    Raises:
        InvalidInputError: not JSON, or not one of the protocol's messages (code ``invalid_message``).
    """
    try:
        data = json.loads(text)
    except ValueError:
        raise invalid_message("message is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise invalid_message("a message is a JSON object with a 'type'")
    try:
        return _PARSER.validate_python(data)
    except ValidationError as exc:
        raise invalid_message(_describe(exc)) from None


def invalid_message(message: str) -> InvalidInputError:
    """An :class:`InvalidInputError` with the protocol's code ``invalid_message``."""
    error = InvalidInputError(message)
    error.code = "invalid_message"
    return error
