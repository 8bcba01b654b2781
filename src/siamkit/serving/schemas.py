"""The shapes of the HTTP API's JSON bodies (request and response), for validation and the
OpenAPI schema at ``/openapi.json``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PROBABILITY = (
    "calibrated P(same) of the score (docs/calibration.md); absent when the model is not "
    "calibrated (`siamkit calibrate MODEL`)"
)
INTERVAL = "[low, high]: the 5-95% bootstrap band of the probability over the calibration pairs"


class Error(BaseModel):
    """Every 4xx/5xx answer: one line saying what was wrong and what was expected."""

    detail: str


class EmbedJSON(BaseModel):
    """``/v1/embed`` as JSON: base64 images (image models) or texts (text models)."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] | None = Field(None, description="base64-encoded image files")
    texts: list[str] | None = None


class PairJSON(BaseModel):
    """``/v1/verify`` (base64 images or texts) and ``/v1/similarity`` (texts) as JSON."""

    model_config = ConfigDict(extra="forbid")
    a: str
    b: str


class ExplainJSON(BaseModel):
    """``/v1/explain`` as JSON: two base64 images and how to attribute their score."""

    model_config = ConfigDict(extra="forbid")
    a: str
    b: str
    method: Literal["occlusion", "integrated_gradients", "saliency", "gradient_shap"] = "occlusion"
    baseline: Literal["black", "mean", "blur"] = "blur"


class Explanation(BaseModel):
    """The pair's verdict and one PNG per input (base64): the input with its attribution map over
    it, red where the pixels raise the score, blue where they lower it (docs/explain.md)."""

    score: float
    threshold: float | None
    decision: Literal["same", "different"] | None
    method: str
    baseline: str
    a_png: str = Field(description="base64 PNG: input a with its map (b fixed)")
    b_png: str = Field(description="base64 PNG: input b with its map (a fixed)")
    probability: float | None = Field(None, description=PROBABILITY)
    probability_interval: list[float] | None = Field(None, description=INTERVAL)


class Embeddings(BaseModel):
    embeddings: list[list[float]]
    dim: int


class Verification(BaseModel):
    """``decision`` is "same" when ``score >= threshold``; both are null for a model that was
    never calibrated. ``aggregate`` and ``references`` come with reference-set verification."""

    score: float
    threshold: float | None
    decision: Literal["same", "different"] | None
    aggregate: str | None = None
    references: int | None = None
    probability: float | None = Field(None, description=PROBABILITY)
    probability_interval: list[float] | None = Field(None, description=INTERVAL)


class Enrolled(BaseModel):
    name: str
    templates: int


class Candidate(BaseModel):
    name: str
    score: float
    probability: float | None = Field(None, description=PROBABILITY)


class Identification(BaseModel):
    """``identity`` is null ("unknown") when the best score is below ``threshold``."""

    identity: str | None
    score: float
    threshold: float | None
    candidates: list[Candidate]
    probability: float | None = Field(None, description=PROBABILITY)
    probability_interval: list[float] | None = Field(None, description=INTERVAL)


class Person(BaseModel):
    name: str
    templates: int


class People(BaseModel):
    people: list[Person]


class Deleted(BaseModel):
    deleted: str


class Indexed(BaseModel):
    indexed: int


class Hit(BaseModel):
    id: str
    score: float


class SearchResults(BaseModel):
    results: list[Hit]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    model: str
    kind: Literal["image", "text"]
    runtime: Literal["torch", "onnx"] = Field(description="what runs the model")
    gallery: str | None
    batching: bool


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with the :class:`Error` body."""
    text = {
        400: "bad input (unreadable image, bad JSON, wrong field)",
        401: "missing or invalid API key",
        403: "read-only API key on a write endpoint",
        404: "unknown identity, or no gallery",
        409: "identity already enrolled, or empty gallery",
        413: "request larger than the server's limits",
        415: "unsupported content type",
        422: "invalid parameter",
        501: "the feature needs the torch runtime; this server runs an ONNX export",
        503: "the model is busy (queue full) or not ready; retry after Retry-After seconds",
    }
    return {code: {"model": Error, "description": text[code]} for code in codes}


def multipart_or_json(files: dict[str, Any], json_model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` describing a body that is either multipart files or JSON."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": files},
                "application/json": {"schema": json_model.model_json_schema()},
            },
        }
    }


def multipart(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """``openapi_extra`` describing a multipart body."""
    schema = {"type": "object", "properties": properties, "required": required}
    content = {"multipart/form-data": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


FILE = {"type": "string", "format": "binary"}
FILES = {"type": "array", "items": FILE, "minItems": 1}
