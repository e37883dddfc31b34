"""Registry of ``mediascore score`` stages. Each name here has a section of the same name in ``StagesConfig``."""

from __future__ import annotations

from jobs.common.config import StagesConfig
from jobs.score.stages.base import ChainedStages, Stage
from jobs.score.stages.cam import CamStage
from jobs.score.stages.fusion import FusionStage
from jobs.score.stages.objects import ObjectsStage
from jobs.score.stages.ocr import OcrStage
from jobs.score.stages.quality import QualityStage
from jobs.score.stages.restore import RestoreStage
from jobs.score.stages.text_embed import TextEmbedStage

STAGES: dict[str, type[Stage]] = {
    QualityStage.name: QualityStage,
    CamStage.name: CamStage,
    OcrStage.name: OcrStage,
    TextEmbedStage.name: TextEmbedStage,
    ObjectsStage.name: ObjectsStage,
    FusionStage.name: FusionStage,
    RestoreStage.name: RestoreStage,
}


def build_stage(name: str, stages_cfg: StagesConfig) -> Stage:
    """Instantiate a registered stage with its section of the config."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    return STAGES[name](getattr(stages_cfg, name))


__all__ = ["STAGES", "ChainedStages", "Stage", "build_stage"]
