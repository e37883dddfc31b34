import numpy as np
import pytest

from jobs.common.config import TextEmbedConfig, load_config
from jobs.media.text import DIM, TextEncoder
from jobs.score.stages.text_embed import TextEmbedStage


@pytest.fixture(scope="module")
def stage():
    return TextEmbedStage(TextEmbedConfig(max_tokens=8))


def _batch(texts):
    n = len(texts)
    pixels = np.empty(n, dtype=object)
    pixels[:] = [np.zeros((4, 4, 3), np.uint8) if t is not None else np.zeros((0, 0, 3), np.uint8) for t in texts]
    ocr = np.empty(n, dtype=object)
    ocr[:] = texts
    return {"source_uri": np.array([f"s3://b/{i}" for i in range(n)]), "error": np.array([""] * n, dtype=object),
            "error_code": np.array([""] * n, dtype=object), "pixels": pixels, "ocr_text": ocr}  # fmt: skip


def test_sentence_and_token_features(stage):
    out = stage(_batch(["no parking\ntoday only", "", None, "free coffee " * 20]))
    sentence, tokens, mask, count = (out[k] for k in ("text_sentence", "text_tokens", "text_token_mask",
                                                      "text_token_count"))  # fmt: skip
    assert np.linalg.norm(sentence[0]) == pytest.approx(1.0, abs=1e-4) and len(sentence[0]) == DIM
    assert count[0] == 4 and mask[0] == [True] * 4 + [False] * 4  # no, parking, today, only
    assert len(tokens[0]) == 8 and all(len(t) == DIM for t in tokens[0])
    assert not np.any(tokens[0][4:]) and np.all(np.abs(np.stack(tokens[0][:4])).sum(1) > 0)
    assert count[3] == 8 and all(mask[3])  # truncated at max_tokens
    # no text: a zero count and no invented features; no pixels: the stage did not run
    assert count[1] == 0 and sentence[1] is None and tokens[1] is None and mask[1] is None
    assert count[2] is None and sentence[2] is None


def test_features_carry_meaning():
    enc = TextEncoder(max_tokens=4)
    s, _, _ = enc(["fresh coffee", "espresso and latte", "no parking"])
    assert s[0] @ s[1] > s[0] @ s[2] + 0.1


def test_lines_join_like_one_text(stage):
    out = stage(_batch(["no parking\ntoday only", "no parking today only"]))
    np.testing.assert_allclose(out["text_sentence"][0], out["text_sentence"][1], atol=1e-6)


def test_needs_ocr_first():
    with pytest.raises(ValueError, match="ocr must come before"):
        load_config(overrides={"stages": {"run": ["text_embed", "ocr"]}})
    batch = _batch(["hello"])
    del batch["ocr_text"]
    out = TextEmbedStage(TextEmbedConfig())(batch)
    assert out["text_token_count"][0] is None and "ocr_text" in out["error"][0]
