"""``/v1/ws``: an interactive annotation session over one WebSocket (the protocol is documented in docs/rest.md).

A session holds one image's embedding and, per object, its clicks, box and last mask; each ``prompt`` sends the
object's previous low-resolution logits back as ``mask_input`` (the SDK's refinement), so a click costs one
mask-decoder call. Every model call is a :class:`~perceptra_seg.service.calls.ServiceCall` run by
:meth:`ServiceState.execute <perceptra_seg.service.state.ServiceState.execute>`: the REST service's inference slots,
queue bound, deadline, stage metrics and cancellation apply unchanged (a session that disconnects cancels the call
it is waiting for).

* Authentication: the REST headers on the upgrade request (``Authorization: Bearer <key>`` or ``X-API-Key``), or,
  for browsers that cannot set them, a first message ``{"type": "auth", "api_key": "..."}``. A missing or wrong key
  closes the session with code 1008 after an ``error`` message. ``image`` and ``prompt`` messages count against
  ``server.rate_limit`` like REST requests; image ids are scoped to the key as in REST.
* A malformed or refused message gets ``{"type": "error", "code", "message"}`` (plus ``retry_after`` where worth
  retrying) and the session stays open; so does an unexpected failure of one message (``internal_error``, the
  traceback in the log only). A message over ``server.max_body_bytes`` closes the session with 1009, an idle
  session (``server.ws_idle_timeout_s`` without a message while no call of it runs) with 1001, a failure of the
  session itself with 1011.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from ..config import ServerConfig
from ..exceptions import InvalidInputError, SegmentorError
from ..models import BBox, EmbeddedImage
from .calls import embed_call, session_call
from .security import Authenticator, Principal, RateLimiter
from .state import ServiceState
from .ws_messages import (
    AuthMessage,
    DeleteObjectMessage,
    ExportMessage,
    ImageIdMessage,
    ImageMessage,
    PromptMessage,
    ResetMessage,
    UndoMessage,
    error_message,
    invalid_message,
    parse_message,
)
from .ws_session import AnnotationSession

__all__ = ["WS_PATH", "install_ws"]

logger = logging.getLogger("perceptra_seg.service.ws")

WS_PATH = "/v1/ws"
#: Messages read ahead of the one being handled; one more gets a ``busy`` error instead of being queued.
MAX_PENDING = 16

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL = 1000, 1001, 1008, 1009, 1011


class _Close(Exception):
    """End the session with a close code (after an optional error message)."""

    def __init__(self, code: int, reason: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.error = code, reason, error


class _Connection:
    """One accepted WebSocket: authentication, a reader that enforces size and idle limits, one worker that handles
    messages in order."""

    def __init__(self, websocket: WebSocket, authenticator: Authenticator, limiter: RateLimiter | None) -> None:
        self.websocket = websocket
        self.state: ServiceState = websocket.app.state.service
        self.server: ServerConfig = self.state.config.server
        self.authenticator = authenticator
        self.limiter = limiter
        self.principal: Principal | None = None
        self.session = AnnotationSession(
            max_objects=self.server.ws_max_objects,
            max_undo=self.server.ws_max_undo,
            max_points=self.server.max_points_per_prompt,
        )
        self.busy = False
        self.messages = 0
        self._send_lock = asyncio.Lock()

    async def send(self, body: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(body))

    # ---------------------------------------------------------------- lifecycle

    async def serve(self) -> None:
        """Run the session until the client leaves or a limit closes it; one ``websocket session`` log record."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        worker = asyncio.create_task(self._work(queue))
        started = time.perf_counter()
        code = CLOSE_NORMAL
        try:
            self._authenticate_from_headers()
            await self._read(queue, worker)
        except _Close as close:
            code = close.code
            await self._close(close)
        except WebSocketDisconnect:
            pass
        finally:
            worker.cancel()  # a call it awaits is cancelled too (its cancel token is set by the runner)
            # asyncio.wait, not gather: a cancellation of this task itself must stay the canceller's own exception
            await asyncio.wait({worker})
            if not worker.cancelled():
                worker.exception()  # retrieved (it was handled through _read); not logged twice
            logger.info(
                "websocket session",
                extra={
                    "key_id": self.principal.key_id if self.principal else None,
                    "messages": self.messages,
                    "close_code": code,
                    "duration_s": round(time.perf_counter() - started, 3),
                },
            )

    async def _close(self, close: _Close) -> None:
        """Send the error (if any) and the close frame; a client that is already gone needs neither."""
        try:
            if close.error is not None:
                await self.send(close.error)
            await self.websocket.close(close.code, close.reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    def _authenticate_from_headers(self) -> None:
        headers = self.websocket.headers
        bearer = headers.get("authorization", "")
        presented = bearer[7:].strip() if bearer[:7].lower() == "bearer " else headers.get("x-api-key")
        if presented or not self.authenticator.enabled:
            self._authenticate(presented)

    def _authenticate(self, presented: str | None) -> None:
        key_id: str | None = None
        if self.authenticator.enabled:
            try:
                key_id = self.authenticator.key_id(presented)
            except SegmentorError as exc:
                raise _Close(CLOSE_POLICY, exc.code, error_message(exc.code, str(exc))) from None
        client = self.websocket.client.host if self.websocket.client else "unknown"
        self.principal = Principal(key_id=key_id, rate_identity=f"key:{key_id}" if key_id else f"ip:{client}")

    async def _read(self, queue: asyncio.Queue[dict[str, Any]], worker: asyncio.Task[None]) -> None:
        """Receive until the client leaves; raises :class:`_Close` for the limits."""
        receiving: asyncio.Future[Any] | None = None
        idle_s = self.server.ws_idle_timeout_s
        first = True
        try:
            while True:
                if receiving is None:
                    receiving = asyncio.ensure_future(self.websocket.receive())
                done, _ = await asyncio.wait({receiving, worker}, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
                if worker in done:
                    worker.result()  # re-raises what ended it
                    raise _Close(CLOSE_INTERNAL, "internal error")
                if not done:
                    if self.busy or not queue.empty():
                        continue
                    raise _Close(CLOSE_GOING_AWAY, f"idle for {idle_s:g} s")
                message, receiving = receiving.result(), None
                if message["type"] == "websocket.disconnect":
                    return
                self.messages += 1
                if message.get("bytes") is not None:
                    size = len(message["bytes"])
                else:
                    size = len((message.get("text") or "").encode())
                if size > self.server.max_body_bytes:
                    raise _Close(
                        CLOSE_TOO_BIG,
                        "message too big",
                        error_message(
                            "payload_too_large",
                            f"message is {size} bytes, over the {self.server.max_body_bytes} byte "
                            "limit (server.max_body_bytes)",
                        ),
                    )
                if first:
                    first = False
                    if await self._auth_message(message):
                        continue
                if queue.qsize() >= MAX_PENDING:
                    await self.send(error_message("busy", f"more than {MAX_PENDING} messages waiting; slow down"))
                    continue
                queue.put_nowait(message)
        except Exception as exc:
            if not isinstance(exc, (_Close, WebSocketDisconnect)):
                logger.exception("websocket session failed")
                raise _Close(CLOSE_INTERNAL, "internal error") from None
            raise
        finally:
            if receiving is not None:
                receiving.cancel()

    async def _auth_message(self, message: dict[str, Any]) -> bool:
        """Handle a first ``auth`` message (``True``), or insist on one when the headers carried no key."""
        text = message.get("text")
        parsed = None
        if text is not None:
            try:
                parsed = parse_message(text)
            except InvalidInputError:
                parsed = None
        if isinstance(parsed, AuthMessage):
            self._authenticate(parsed.api_key)
            await self.send({"type": "authenticated"})
            return True
        if self.principal is None:
            raise _Close(
                CLOSE_POLICY,
                "unauthorized",
                error_message(
                    "unauthorized",
                    'missing API key: send it in the headers or as the first message {"type": "auth", "api_key": ...}',
                ),
            )
        return False

    # ---------------------------------------------------------------- messages

    async def _work(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            message = await queue.get()
            self.busy = True
            start = time.perf_counter()
            try:
                reply = await self._handle(message, start)
            except SegmentorError as exc:
                if exc.http_status == 500:  # a failure, not the client's doing: logged as REST logs it
                    logger.error("websocket message failed: %s: %s", type(exc).__name__, exc)
                reply = error_message(exc.code, str(exc), getattr(exc, "retry_after", None))
            except Exception:  # as REST's 500: the session stays usable, the cause goes to the log only
                logger.exception("websocket message failed")
                reply = error_message("internal_error", "internal server error")
            finally:
                self.busy = False
            await self.send(reply)

    async def _handle(self, message: dict[str, Any], start: float) -> dict[str, Any]:
        if message.get("bytes") is not None:  # a binary frame is an image upload
            self._count_request()
            return await self._embed(message["bytes"], start)
        parsed = parse_message(message.get("text") or "")
        if isinstance(parsed, AuthMessage):
            raise invalid_message("'auth' is only accepted as the first message")
        if isinstance(parsed, ImageMessage):
            self._count_request()
            assert self.principal is not None
            source = await self.state.source(parsed.image, None, self.principal)
            assert not isinstance(source, EmbeddedImage)
            return await self._embed(source, start)
        if isinstance(parsed, ImageIdMessage):
            assert self.principal is not None
            handle = await self.state.resolve_id(self.principal.scope, parsed.image_id)
            self.session.set_image(handle, parsed.image_id)
            return {"type": "ready", "image_id": parsed.image_id, "width": handle.width, "height": handle.height}
        if isinstance(parsed, PromptMessage):
            return await self._prompt(parsed, start)
        if isinstance(parsed, UndoMessage):
            object_id, restored = self.session.undo()
            if restored is None:
                return {"type": "deleted", "object": object_id}
            return restored.document(object_id)
        if isinstance(parsed, DeleteObjectMessage):
            self.session.delete(parsed.object)
            return {"type": "deleted", "object": parsed.object}
        if isinstance(parsed, ResetMessage):
            self.session.reset()
            return {"type": "reset"}
        assert isinstance(parsed, ExportMessage)
        return self.session.export(coco_image_id=parsed.coco_image_id, category_id=parsed.category_id)

    def _count_request(self) -> None:
        """``image`` and ``prompt`` messages count against ``server.rate_limit`` like REST requests."""
        if self.limiter is not None and self.principal is not None:
            self.limiter.check(self.principal.rate_identity)

    async def _embed(self, source: str | bytes, start: float) -> dict[str, Any]:
        assert self.principal is not None
        body = await self.state.execute(embed_call(source, self.principal.scope, None))
        handle = await self.state.resolve_id(self.principal.scope, body["image_id"])
        self.session.set_image(handle, body["image_id"])
        return {
            "type": "ready",
            "image_id": body["image_id"],
            "width": handle.width,
            "height": handle.height,
            "latency_ms": (time.perf_counter() - start) * 1000.0,
        }

    async def _prompt(self, message: PromptMessage, start: float) -> dict[str, Any]:
        if not message.points and message.box is None:
            raise InvalidInputError("a prompt needs 'points', a 'box' or both")
        handle = self.session.require_image()
        points = tuple((p.x, p.y, p.label) for p in message.points)
        box: BBox | None = None
        if message.box is not None:
            x1, y1, x2, y2 = message.box
            box = (x1, y1, x2, y2)
        prompt = self.session.next_prompt(message.object, points, box)
        self._count_request()
        body = await self.state.execute(session_call(handle, prompt, ("rle",)))
        result = body["results"].only()
        state = self.session.record(message.object, prompt, result)
        return {**state.document(message.object), "latency_ms": (time.perf_counter() - start) * 1000.0}


def install_ws(app: FastAPI, authenticator: Authenticator, limiter: RateLimiter | None) -> None:
    """Add ``/v1/ws`` to ``app`` (same keys and rate limit as the REST routes) and name it in the OpenAPI
    description (OpenAPI has no WebSocket operations)."""

    async def annotation_session(websocket: WebSocket) -> None:
        await websocket.accept()
        await _Connection(websocket, authenticator, limiter).serve()

    app.add_api_websocket_route(WS_PATH, annotation_session)
    app.description = (
        f"{app.description}\n\nInteractive annotation: WebSocket `{WS_PATH}` — send an image, then click prompts "
        "per object and get refined masks back (protocol: docs/rest.md, section 'WebSocket sessions')."
    )
