"""The HTTP API's request body and response schemas, as ``/openapi.json`` documents them. Pydantic only.

FastAPI reads these at route creation, so this module does not postpone annotations.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MaskFormat = Literal["rle", "coco", "png", "none"]  # jobs.media.masks.MASK_FORMATS
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["uri"],
                    "properties": {"uri": {"type": "string", "example": "s3://media/frames/0001.jpg"}},
                }
            },
        },
    }
}


SAMPLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "one file per modality, the field named after it; the file name's extension "
                    "says what it is (.png, .npy, .nii.gz, .mp4, ...)",
                    "additionalProperties": {"type": "string", "format": "binary"},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["uris"],
                    "properties": {
                        "uris": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "example": {"visible": "s3://media/s1/visible.png", "depth": "s3://media/s1/depth.npy"},
                        }
                    },
                }
            },
        },
    }
}


class ScoreFusionResult(BaseModel):
    """The columns of ``mediascore score --samples`` for one sample."""

    sf_class: str | None = Field(description="the positive label, or not_<positive>")
    sf_score: float | None = Field(description="the fused score")
    sf_scores: dict[str, float] = Field(description="each present modality's own score")
    sf_weights: dict[str, float] = Field(description="the weights used, renormalised over the modalities present")
    sf_missing: list[str] = Field(description="modalities absent or unreadable (with the reason)")
    sf_model: str


class OcrResult(BaseModel):
    lines: list[str]
    boxes: list[list[int]] = Field(description="one quadrilateral per line: x1, y1, ..., x4, y4 in pixels")
    confidences: list[float]


class ObjectBox(BaseModel):
    label: str
    box: list[int] = Field(description="x0, y0, x1, y1 in pixels")
    score: float


class ScoreResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    score: float | None = Field(description="the fusion model's probability of the positive class")
    class_: str | None = Field(alias="class")
    weights: dict[str, float | None] | None = Field(description="modality weights: image, text, objects, key region")
    key_box: list[int] | None
    text: str
    lines: list[str]
    objects: list[ObjectBox]
    cam_class: str | None
    cam_score: float | None
    cam_box: list[int] | None
    models: dict[str, str]


class LocalizeResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class")
    score: float
    box: list[int] = Field(description="x0, y0, x1, y1 in pixels")
    mask_area: float = Field(description="share of the image's pixels in the mask")
    mask: dict | None = Field(
        description="rle: COCO uncompressed {size, counts}; coco: COCO compressed {size, counts (string)}; "
        "png: {size, png (base64)}"
    )
    model: str
