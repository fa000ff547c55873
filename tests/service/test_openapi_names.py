"""OpenAPI names a generated client can use: explicit operation ids and a named RLE model (which both RLE forms
the service sends still satisfy)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from pycocotools import mask as mask_utils

from .helpers import b64_png

OPERATIONS = {
    ("get", "/v1/healthz"): "healthz",
    ("get", "/v1/readyz"): "readyz",
    ("post", "/v1/embed"): "embed",
    ("post", "/v1/embed/upload"): "embed_upload",
    ("post", "/v1/segment/box"): "segment_box",
    ("post", "/v1/segment/points"): "segment_points",
    ("post", "/v1/segment"): "segment",
    ("post", "/v1/segment/auto"): "segment_auto",
    ("post", "/v1/segment/upload"): "segment_upload",
    ("post", "/v1/segment/text"): "segment_text",
    ("post", "/v1/videos"): "video_upload",
    ("post", "/v1/videos/{video_id}/prompts"): "video_prompt",
    ("post", "/v1/videos/{video_id}/propagate"): "video_propagate",
    ("delete", "/v1/videos/{video_id}"): "video_delete",
    ("post", "/v1/batch"): "batch_submit",
    ("get", "/v1/batch/{job_id}"): "batch_get",
    ("delete", "/v1/batch/{job_id}"): "batch_delete",
}


def test_operation_ids_and_named_rle(fake_client: Callable[..., Any]) -> None:
    with fake_client() as client:
        spec = client.get("/openapi.json").json()
    found = {(method, path): op["operationId"] for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert found == OPERATIONS
    schemas = spec["components"]["schemas"]
    assert set(schemas["Rle"]["required"]) == {"size", "counts"}
    rle = schemas["MaskResult"]["properties"]["rle"]
    assert {"$ref": "#/components/schemas/Rle"} in rle["anyOf"]
    assert schemas["Strategy"]["enum"] == ["all", "best", "largest", "merge"]
    assert schemas["OutputFormat"]["enum"] == ["rle", "png", "polygons"]
    body = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["strategy"]["$ref"] == "#/components/schemas/Strategy"
    formats = body["properties"]["output_formats"]["anyOf"][0]
    assert formats["items"] == {"$ref": "#/components/schemas/OutputFormat"}


def test_both_rle_forms_pass_the_response_model(fake_client: Callable[..., Any]) -> None:
    body = {"image": b64_png(), "box": [4, 4, 40, 30], "output_formats": ["rle"]}
    for compressed in (True, False):
        with fake_client(outputs={"rle_compressed": compressed}) as client:
            answer = client.post("/v1/segment/box", json=body)
        assert answer.status_code == 200, answer.text
        rle = answer.json()["rle"]
        assert isinstance(rle["counts"], str if compressed else list)
        if compressed:
            mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert mask.shape == (48, 64) and mask.sum() == answer.json()["area"] > 0


def test_upload_request_part_is_typed(fake_client: Callable[..., Any]) -> None:
    with fake_client() as client:
        spec = client.get("/openapi.json").json()
        form = spec["paths"]["/v1/segment/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]
        request = form["schema"]["properties"]["request"]
        assert {"prompts", "boxes", "points", "strategy", "output_formats", "multimask"} <= set(request["properties"])
        assert form["encoding"]["request"]["contentType"] == "application/json"
        # a part sent as declared (JSON text with its content type) is read as the options
        options = '{"boxes": [[4, 4, 40, 30], [1, 1, 20, 20]], "output_formats": ["rle"]}'
        files = {
            "file": ("a.png", base64.b64decode(b64_png()), "image/png"),
            "request": (None, options, "application/json"),
        }
        answer = client.post("/v1/segment/upload", files=files)
    assert answer.status_code == 200, answer.text
    assert [r["prompt_index"] for r in answer.json()["results"]] == [0, 1]
