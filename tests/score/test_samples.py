"""`mediascore score --samples`: multi-modal samples grouped by sample_id in Ray Data, scored from a scorefusion
checkpoint into samples/, bad inputs recorded, a rerun resuming from the committed parts."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import write_table

from jobs.common import storage
from jobs.media.scorefusion import ScoreFusionScorer
from jobs.score.samples import SAMPLES_FOLDER, read_samples_table, run_score_samples


def _table(output: str) -> pd.DataFrame:
    return read_samples_table(output).set_index("sample_id")


def test_samples_are_grouped_scored_and_resumed(scorefusion_run):
    settings, _, manifest, *_ = scorefusion_run
    checkpoint = storage.join(settings.output, "scorefusion.pt")
    test = manifest[manifest.split == "test"].copy()
    ids = sorted(test.sample_id.unique())
    gone = test[(test.sample_id == ids[1]) & (test.modality == "clip")].index
    test.loc[gone, "uri"] = "s3://test-scorefusion/nowhere/clip.mp4"  # a missing object
    extra = pd.DataFrame([{"sample_id": ids[2], "modality": "thermal", "uri": "s3://x/y.png", "label": "present"}])
    test = pd.concat([test, extra])  # a modality the model has no network for is ignored
    write_table("s3://test-scorefusion/score.parquet", test)
    output = "s3://test-scorefusion/scored"
    first = run_score_samples("s3://test-scorefusion/score.parquet", output, checkpoint, batch_size=2)
    assert first.samples == len(ids) and first.scored == len(ids) and first.skipped_done == 0
    table = _table(output)
    assert sorted(table.index) == ids
    scorer = ScoreFusionScorer(checkpoint)
    whole = table.loc[ids[0]]
    sample = manifest[manifest.sample_id == ids[0]].set_index("modality").uri
    direct = scorer.score_samples([{m: (storage.read_bytes(u), u) for m, u in sample.items()}])[0]
    assert whole.sf_score == pytest.approx(direct.sf_score) and whole.sf_class == direct.sf_class
    assert dict(whole.sf_scores) == pytest.approx(direct.sf_scores) and whole.sf_model.endswith("#epoch=0")
    assert whole.label in ("present", "absent") and list(whole.sf_missing) == []
    report = storage.read_bytes(first.report).decode()
    assert "infrared" in report and "clip" in report and "sf_score, label present" in report and ids[1] in report
    holed = table.loc[ids[1]]
    assert holed.sf_missing[0].startswith("clip (") and dict(holed.sf_weights) == {"infrared": 1.0}
    # a rerun finds every sample committed; one part removed is scored again, the others are not touched
    parts = sorted(o.uri for o in storage.list_objects(storage.join(output, SAMPLES_FOLDER)))
    lost = pq.read_table(io.BytesIO(storage.read_bytes(parts[0]))).num_rows
    storage.delete(parts[0])
    again = run_score_samples("s3://test-scorefusion/score.parquet", output, checkpoint, batch_size=2)
    assert again.skipped_done == len(ids) - lost and again.scored == lost and sorted(_table(output).index) == ids
    other = storage.join(settings.output, "other.pt")
    storage.write_bytes(other, storage.read_bytes(checkpoint))
    with pytest.raises(ValueError, match="mix two models"):
        run_score_samples("s3://test-scorefusion/score.parquet", output, other)
