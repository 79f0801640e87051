"""What the service says about its text-to-image model. Torch-free, so the HTTP replica can
describe the model without loading one."""

from __future__ import annotations

from dataclasses import dataclass

PLACEHOLDER_NOTICE = (
    "placeholder images: no creative model is configured, so a small random-weight pipeline "
    "made them; set KIKI_CREATIVE_MODEL to a diffusers folder (SD 1.5, SD-Turbo, SDXL-Turbo) "
    "for real images"
)


@dataclass(frozen=True)
class PipelineInfo:
    """The loaded model, as generation answers report it."""

    source: str
    pipeline_class: str
    placeholder: bool
    device: str
    dtype: str
    native_size: int
    size_multiple: int
    steps: int
    guidance: float

    @property
    def notice(self) -> str | None:
        return PLACEHOLDER_NOTICE if self.placeholder else None
