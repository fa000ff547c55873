"""Hostile inputs to this session's new front ends that once went wrong: a multipart ``/v1/batch`` whose options
came as a file part (curl's ``-F request=@options.json``) or under a misspelt field name ran with no options at
all; an exemplar coordinate beyond float32's range became infinite instead of being refused, and a number where
a list belongs raised TypeError from the SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from perceptra_seg.concepts import ConceptRequest
from perceptra_seg.exceptions import InvalidInputError

from .helpers import png_bytes, wait_batch_finished


def test_multipart_options_as_a_file_part_are_read(fake_client: Callable[..., Any]) -> None:
    files = [("file", ("a.png", png_bytes(), "image/png"))]
    with fake_client() as client:
        as_file = client.post("/v1/batch", files=[*files, ("request", ("o.json", b'{"boxes": [[1, 1, 30, 30]]}'))])
        assert as_file.status_code == 202, as_file.text
        slot = wait_batch_finished(client, as_file.json()["job_id"])["results"][0]
        assert slot["status"] == "done" and len(slot["results"]) == 1, slot
        refusals = [
            ({"data": {"options": '{"boxes": [[1, 1, 30, 30]]}'}}, "unknown multipart field"),
            ({"data": {"request": ['{"boxes": [[1, 1, 5, 5]]}', "{}"]}}, "'request' parts"),
            ({"files": [*files, ("request", ("o.json", b"\xff\xfe"))]}, "not UTF-8"),
        ]
        for kwargs, message in refusals:
            answer = client.post("/v1/batch", **{"files": files, **kwargs})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_input" and message in answer.json()["error"]["message"]
        assert client.get("/v1/healthz").status_code == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"exemplars": [{"box": [0, 0, 1e300, 1e300]}]}, "four finite numbers"),  # inf once cast to float32
        ({"exemplars": [{"box": [-1e39, 0, 5, 5]}]}, "four finite numbers"),
        ({"texts": 5}, "texts must be a list"),  # these three once raised TypeError
        ({"exemplars": 5}, "exemplars must be a list"),
        ({"output_formats": 5}, "output_formats must be a list"),
        ({"exemplars": {"box": [1, 1, 5, 5]}}, "exemplars must be a list"),  # once read as the key 'box'
    ],
)
def test_concept_request_refuses_hostile_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ConceptRequest("image.png", **{"texts": ("car",), **fields})
