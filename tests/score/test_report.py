import re

import numpy as np

from jobs.common.config import DecodeConfig, ListingConfig, QualityConfig
from jobs.score.ingest import Decoder, list_inputs
from jobs.score.output import Writer
from jobs.score.pipeline import _finish
from jobs.score.report import build_report, histogram_svg, write_report
from jobs.score.stages.quality import QualityStage


def test_histogram_draws_one_bar_per_bin():
    svg = histogram_svg(np.array([0.0, 1.0, 1.0, 2.0, np.nan]), "q", bins=4)
    assert svg.count("<rect") == 4 and "n=4" in svg
    assert "no values" in histogram_svg(np.array([np.nan]), "q")


def test_report_shows_totals_distributions_frames_and_dead_letters(corpus, tmp_path):
    corpus_uri, _manifest = corpus
    out = str(tmp_path / "out")
    listing = list_inputs(corpus_uri, ListingConfig())
    broken = [m for m in listing.media if "/broken/" in m.uri]
    media = [m for m in listing.media if m.kind == "image" and m not in broken][:6] + broken
    media += [m for m in listing.media if m.kind == "video" and m not in broken][:1]
    batch = {"uri": np.array([m.uri for m in media]), "size": np.array([m.size for m in media]),
             "kind": np.array([m.kind for m in media]), "skip": np.array([""] * len(media))}  # fmt: skip
    stage, writer = QualityStage(QualityConfig()), Writer(out)
    for block in Decoder(DecodeConfig())(batch):
        writer(stage(block))
    _finish(corpus_uri, out, listing, len(media), 1.0)
    page = build_report(out, samples=5)
    assert page.count("<figure>") == 5 and page.count("data:image/jpeg;base64,") == 5
    assert len(re.findall(r"<b>quality_\w+</b>", page)) == len(QualityStage.columns)
    assert "image_truncated" in page and "media_type_mismatch" in page
    assert write_report(out).endswith("report.html") and (tmp_path / "out" / "report.html").stat().st_size > 1000
