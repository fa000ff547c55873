"""``POST /v1/segment/text``: every instance of a concept on one image (model ``sam3``).

The body names the image (``image`` or ``image_id``), one phrase (``text``) or several (``texts``), optional exemplar
boxes and a score threshold; the answer is ``/v1/segment``'s ``results`` list, each result with its phrase as
``label``. The route builds a :class:`~perceptra_seg.concepts.ConceptRequest` and hands it to the SDK through the
same runner as every other route. Errors: an empty phrase, too many phrases or a bad exemplar → 400
``invalid_input``; a model without text prompts → 400 ``text_prompts_unsupported``.
"""

# No ``from __future__ import annotations``: FastAPI must see the dependency types (as in routes.py).

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from ..concepts import ConceptRequest
from ..config import ServerConfig
from ..utils.masks import OutputFormat as OutputFormatName
from .bodies import json_body_doc, read_json
from .calls import ServiceCall, Source
from .request_context import current_request_id
from .schemas import Box, OutputFormat, SegmentListResponse, _Body, _ImageSource
from .state import get_state

__all__ = ["ExemplarIn", "TextSegmentRequest", "register_text_route", "text_call"]


class ExemplarIn(_Body):
    """An example of the concept (positive) or of what it is not (negative)."""

    box: Box
    label: Literal[0, 1] = Field(1, description="1 = an instance of the concept, 0 = not one")


class TextSegmentRequest(_ImageSource):
    """Segment every instance of a phrase (and/or exemplar boxes) on one image (``image`` or ``image_id``)."""

    text: str | None = Field(None, description="one noun phrase, e.g. 'red car'")
    texts: list[str] | None = Field(None, description="several phrases on the same image encoding")
    exemplars: list[ExemplarIn] | None = Field(None, description="exemplar boxes, XYXY pixels of the image")
    threshold: float = Field(0.5, ge=0, lt=1, description="keep instances scoring above this")
    output_formats: list[OutputFormat] | None = Field(None, description="mask encodings to return")

    @model_validator(mode="after")
    def _one_text_field(self) -> Any:
        if self.text is not None and self.texts is not None:
            raise ValueError("send 'text' or 'texts', not both")
        return self

    def phrases(self) -> tuple[str, ...]:
        """The phrases of the body, in order."""
        return (self.text,) if self.text is not None else tuple(self.texts or ())


def text_call(
    body: TextSegmentRequest, image: Source, formats: tuple[OutputFormatName, ...], request_id: str | None
) -> ServiceCall:
    """``/v1/segment/text``: every instance of each phrase, as ``results``.

    Raises:
        InvalidInputError: an empty phrase, too many phrases, no phrase and no exemplar, a bad exemplar.
    """
    exemplars = [{"box": e.box, "label": e.label} for e in body.exemplars or []]
    request = ConceptRequest(image, body.phrases(), exemplars, body.threshold, formats, request_id=request_id)
    return ServiceCall(request, "results", prompts=max(1, len(request.texts)))


def register_text_route(router: APIRouter, server: ServerConfig, caller: Any, errors: dict[int | str, Any]) -> None:
    """Add ``POST /v1/segment/text`` to ``router``; ``caller`` is the authenticated-principal dependency type."""

    @router.post(
        "/v1/segment/text",
        operation_id="segment_text",
        response_model=SegmentListResponse,
        response_model_exclude_none=True,
        responses=errors,
        tags=["inference"],
        openapi_extra=json_body_doc(TextSegmentRequest),
    )
    async def segment_text(request: Request, principal: caller) -> Any:
        """Every instance of a concept (SAM 3): ``text``/``texts`` and/or ``exemplars``; one result per instance,
        labelled with its phrase."""
        state = get_state(request)
        body = await read_json(request, TextSegmentRequest, server)
        formats = state.formats(body.output_formats)
        call = text_call(body, "", formats, current_request_id())  # checks the phrases before the image is fetched
        state.check_work(call.prompts, multimask=False, formats=formats)
        source = await state.source(body.image, body.image_id, principal, request)
        return await state.execute(text_call(body, source, formats, current_request_id()), request)
