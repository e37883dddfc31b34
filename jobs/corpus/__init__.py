"""A deterministic labelled sample corpus: images in three styles, videos, broken files and a manifest.

See :mod:`jobs.corpus.scene` for how labels are made and :mod:`jobs.corpus.manifest` for the manifest columns.
"""

from jobs.corpus.build import CorpusSummary, make_corpus
from jobs.corpus.spec import BROKEN_KINDS, CLASSES, IMAGE_TYPES, MANIFEST_NAME
from jobs.corpus.video import read_frame_code

__all__ = ["BROKEN_KINDS", "CLASSES", "IMAGE_TYPES", "MANIFEST_NAME", "CorpusSummary", "make_corpus", "read_frame_code"]
