"""Request parameters and the one processing spec every job is run through.

``/resize``, ``/crop`` and ``/jobs`` all validate here, at submit, so a worker never
discovers a bad parameter. ``to_pipeline`` turns each job type into the same
``PipelineSpec`` (ordered steps, then named variants), which the worker executes.
"""

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError,
                      field_validator, model_serializer, model_validator)

from pixq import formats
from pixq.errors import ErrorCode, PixqError

MAX_DIMENSION = formats.MAX_REQUEST_SIDE
"""Largest width or height a request may ask for: what every output format holds (WebP's 16383)."""

Fit = Literal["cover", "contain", "fill", "inside", "outside"]
OutputFormat = Literal[(*formats.OUTPUT_NAMES, "same")]  # type: ignore[valid-type]
"""The formats of pixq.formats that pixq writes, or ``same``."""
Gravity = Annotated[
    Literal["centre", "north", "northeast", "east", "southeast", "south", "southwest", "west",
            "northwest", "attention", "entropy"],
    BeforeValidator(lambda value: "centre" if value == "center" else value),
]
Dimension = Annotated[int, Field(ge=1, le=MAX_DIMENSION)]
_COLOUR = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputOptions(_Strict):
    """How an output is encoded. ``format`` absent or ``same`` keeps the input's format
    when it can be written, otherwise JPEG (PNG when the image has alpha)."""

    format: OutputFormat = "same"
    quality: int = Field(80, ge=1, le=100)
    lossless: bool = False
    progressive: bool = False
    strip: bool = True
    background: str = "#ffffff"
    chroma_subsampling: Literal["4:4:4", "4:2:0", "auto"] = "4:4:4"
    """AVIF only: 4:4:4 (sharp's default) keeps full colour resolution, 4:2:0 halves it,
    auto is libvips' choice (4:2:0 below quality 90). Trade-off: docs/operations.md."""
    icc_profile: Literal["srgb", "keep"] = "srgb"
    """``srgb``: convert to sRGB, embed no profile. ``keep``: an RGB input's embedded profile is
    kept, pixels untransformed, the profile embedded even when ``strip`` is on (GIF, which
    holds no profile, and grey or CMYK inputs still get sRGB). Cost: docs/operations.md."""

    @model_serializer(mode="wrap")
    def _leave_out_new_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """No ``chroma_subsampling`` or ``icc_profile`` key at its default: a spec reads exactly
        as before, so a worker of the previous release (which forbids unknown keys) still runs
        it mid-upgrade."""
        data = handler(self)
        for key, default in (("chroma_subsampling", "4:4:4"), ("icc_profile", "srgb")):
            if data.get(key) == default:
                del data[key]
        return data

    @field_validator("format", mode="before")
    @classmethod
    def _format_alias(cls, value: Any) -> Any:
        return formats.canonical(value) if isinstance(value, str) else value

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not _COLOUR.match(value):
            raise ValueError("expected a hex colour such as #ffffff or #00000000")
        return value if value.startswith("#") else f"#{value}"


class Placement(_Strict):
    """Target size and how the image is fitted into it (shared by resize steps and variants)."""

    width: Dimension | None = None
    height: Dimension | None = None
    fit: Fit = "inside"
    enlarge: bool = False
    gravity: Gravity = "centre"


class ResizeOptions(Placement):

    @model_validator(mode="after")
    def _needs_a_size(self) -> "ResizeOptions":
        if self.width is None and self.height is None:
            raise ValueError("give width, height or both")
        if self.fit in ("cover", "contain") and (self.width is None or self.height is None):
            # These fits need a box; with one side they behave as 'inside' (as in sharp).
            # 'fill' with one side stays 'fill': that side stretches, the other is kept (sharp).
            object.__setattr__(self, "fit", "inside")
        return self


class ResizeParams(ResizeOptions, OutputOptions):
    """Parameters of POST /api/v1/resize."""


class CropBox(_Strict):
    """A crop: an explicit box (x, y, width, height), or width/height placed by gravity."""

    x: int | None = Field(None, ge=0, le=10 * MAX_DIMENSION)
    y: int | None = Field(None, ge=0, le=10 * MAX_DIMENSION)
    width: Dimension
    height: Dimension
    gravity: Gravity = "centre"

    @model_validator(mode="after")
    def _box_is_complete(self) -> "CropBox":
        if (self.x is None) != (self.y is None):
            raise ValueError("give both x and y, or neither (then gravity places the box)")
        return self

    @property
    def is_box(self) -> bool:
        return self.x is not None


class CropParams(CropBox, OutputOptions):
    """Parameters of POST /api/v1/crop."""


# --- Pipeline steps ------------------------------------------------------------------


class ResizeStep(ResizeOptions):
    op: Literal["resize"]
    background: str = "#ffffff"

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        return OutputOptions._colour(value)  # the same hex check (an unchecked str reached the publish)


class CropStep(CropBox):
    op: Literal["crop"]


class RotateStep(_Strict):
    op: Literal["rotate"]
    angle: Literal[0, 90, 180, 270]


class FlipStep(_Strict):
    """Mirror vertically (top-bottom)."""

    op: Literal["flip"]


class FlopStep(_Strict):
    """Mirror horizontally (left-right)."""

    op: Literal["flop"]


class BlurStep(_Strict):
    op: Literal["blur"]
    sigma: float = Field(ge=0.3, le=100)


class SharpenStep(_Strict):
    op: Literal["sharpen"]
    sigma: float = Field(1.0, ge=0.3, le=10)


class GrayscaleStep(_Strict):
    op: Literal["grayscale"]


Step = Annotated[
    Union[ResizeStep, CropStep, RotateStep, FlipStep, FlopStep, BlurStep, SharpenStep, GrayscaleStep],
    Field(discriminator="op"),
]


class Variant(OutputOptions, Placement):
    """One named output, resized (when a size is given) from the result of the steps."""

    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$")

    @property
    def resize(self) -> ResizeOptions | None:
        if self.width is None and self.height is None:
            return None
        return ResizeOptions(width=self.width, height=self.height, fit=self.fit,
                             enlarge=self.enlarge, gravity=self.gravity)


class AnalyzeOptions(_Strict):
    """Parameters of POST /api/v1/analyze (the job describes its image, worker.imaging.analyze)."""

    include_gps: bool = False
    """GPS position in the EXIF subset: off by default, a photo's location is personal data."""


class PipelineSpec(_Strict):
    """Parameters of POST /api/v1/jobs: ordered steps, then up to 10 named variants.

    ``analyze`` asks the worker for the image analysis as well (an analyze job is exactly
    that with no variants: it writes no image)."""

    steps: list[Step] = Field(default_factory=list, max_length=10)
    variants: list[Variant] = Field(default_factory=lambda: [Variant(name="default")], max_length=10)
    analyze: AnalyzeOptions | None = None

    @model_serializer(mode="wrap")
    def _leave_out_no_analysis(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """No ``analyze`` key unless there is an analysis: a spec reads exactly as before, so a
        worker of the previous release (which forbids unknown keys) still runs it mid-upgrade."""
        data = handler(self)
        if data.get("analyze", 0) is None:
            del data["analyze"]
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> "PipelineSpec":
        if not self.variants and (self.analyze is None or self.steps):
            # The analysis describes the input, never the steps' result: steps need an output.
            raise ValueError("variants: give at least one variant")
        names = [variant.name for variant in self.variants]
        if len(names) != len(set(names)):
            raise ValueError("variant names must be unique")
        return self


_MODEL_OF: dict[str, type[BaseModel]] = {
    "resize": ResizeParams,
    "crop": CropParams,
    "pipeline": PipelineSpec,
    "analyze": AnalyzeOptions,
}
"""Request model of each job type (keys are pixq.jobs.JobType values; pixq.jobs imports this
module for the message's typed spec, so this one does not import it back)."""


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem, e.g. ``width: Input should be greater than or equal to 1``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(item) for item in error["loc"]) or "parameters"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def validate_parameters(job_type: str, parameters: dict[str, Any]) -> BaseModel:
    """Validate a request's parameters for its job type (a pixq.jobs.JobType) or raise INVALID_PARAMETERS."""
    try:
        return _MODEL_OF[job_type].model_validate(parameters)
    except ValidationError as exc:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, describe_validation_error(exc)) from None


def to_pipeline(job_type: str, parameters: dict[str, Any]) -> PipelineSpec:
    """The one engine: resize and crop are shorthands for a single-variant pipeline.

    Called once, by the API at submit: the job message carries the result, and the worker
    only re-validates that typed spec (pixq.jobs.JobMessage), never the raw parameters."""
    model = validate_parameters(job_type, parameters)
    if isinstance(model, PipelineSpec):
        return model
    if isinstance(model, AnalyzeOptions):
        return PipelineSpec(steps=[], variants=[], analyze=model)
    output = OutputOptions(**{k: getattr(model, k) for k in OutputOptions.model_fields})
    if isinstance(model, ResizeParams):
        return PipelineSpec(steps=[], variants=[Variant(
            name="default", width=model.width, height=model.height, fit=model.fit,
            enlarge=model.enlarge, gravity=model.gravity, **output.model_dump())])
    assert isinstance(model, CropParams)
    crop = CropStep(op="crop", x=model.x, y=model.y, width=model.width,
                    height=model.height, gravity=model.gravity)
    return PipelineSpec(steps=[crop], variants=[Variant(name="default", **output.model_dump())])
