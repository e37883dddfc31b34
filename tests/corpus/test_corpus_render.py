"""Scenes, shapes and the three drawing styles, checked on rendered pixels before any encoding."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from jobs.corpus import fonts, render, scene, shapes
from jobs.corpus.spec import CLASSES, DISTRACTOR, DISTRACTOR_CLASSES, IMAGE_TYPES, counts_for_scale, item_rng, split_of


def _covered(sample: scene.Scene) -> np.ndarray:
    """Pixels inside some object box or text box."""
    covered = np.zeros((sample.height, sample.width), dtype=bool)
    for box in [o.box() for o in sample.objects] + [t.box for t in sample.texts]:
        covered[box[1] : box[3], box[0] : box[2]] = True
    return covered


@pytest.mark.parametrize("cls", [*CLASSES, DISTRACTOR])
def test_unit_polygons_fit_the_unit_circle(cls):
    poly = shapes.unit_polygon(cls)
    assert np.isclose(np.linalg.norm(poly, axis=1).max(), 1.0)
    assert len(poly) >= 3


def test_class_silhouettes_differ():
    masks = {}
    for cls in CLASSES:
        mask = np.zeros((101, 101), dtype=np.uint8)
        shapes.fill(mask, shapes.polygon(cls, 50, 50, 45, 0.3), 1)
        masks[cls] = mask.astype(bool)
    for a in CLASSES:
        for b in CLASSES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)


def test_scene_is_determined_by_seed_and_id():
    assert scene.sample_scene(3, 7, cjk=False) == scene.sample_scene(3, 7, cjk=False)
    assert scene.sample_scene(3, 7, cjk=False) != scene.sample_scene(4, 7, cjk=False)


@pytest.mark.parametrize("scene_id", range(12))
def test_objects_inside_image_and_primary_is_largest(scene_id):
    sample = scene.sample_scene(0, scene_id, cjk=False)
    assert sample.label == sample.objects[0].cls and not sample.objects[0].distractor
    mask = render.instance_mask(sample.objects, sample.draw_order(), sample.width, sample.height)
    counts = np.bincount(mask.ravel(), minlength=len(sample.objects) + 1)
    for k, obj in enumerate(sample.objects, start=1):
        x0, y0, x1, y1 = obj.box()
        assert 0 <= x0 < x1 <= sample.width and 0 <= y0 < y1 <= sample.height
        ys, xs = np.nonzero(mask == k)
        assert len(xs) > 0, f"instance {k} fully hidden"
        assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
        if k > 1 and not obj.distractor:
            assert counts[1] > counts[k]


def test_labels_are_balanced_and_distractor_cooccurs():
    scenes = [scene.sample_scene(0, i, cjk=False) for i in range(360)]
    labels = collections.Counter(s.label for s in scenes)
    assert set(labels.values()) == {60}
    has = collections.defaultdict(list)
    for s in scenes:
        has[s.label in DISTRACTOR_CLASSES].append(any(o.distractor for o in s.objects))
        assert sum(o.distractor for o in s.objects) <= 1
    assert 0.55 < np.mean(has[True]) < 0.85
    assert 0.02 < np.mean(has[False]) < 0.2


@pytest.mark.parametrize("scene_id", range(8))
def test_sketch_is_paper_and_one_ink_colour(scene_id):
    sample = scene.sample_scene(1, scene_id, cjk=False)
    image = render.render_scene(sample, "sketch", item_rng(0, 0))
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours <= {sample.background.paper, sample.ink}
    drawn = np.any(image != np.array(sample.background.paper, np.uint8), axis=2)
    assert drawn.any()
    assert not (drawn & ~_covered(sample)).any(), "ink outside every object and text box"


@pytest.mark.parametrize("scene_id", range(8))
def test_cartoon_draws_only_inside_boxes(scene_id):
    sample = scene.sample_scene(2, scene_id, cjk=False)
    image = render.render_scene(sample, "cartoon", item_rng(0, 0))
    from jobs.corpus import backgrounds

    flat = backgrounds.flat(sample.background, sample.width, sample.height)
    changed = np.any(image != flat, axis=2)
    assert not (changed & ~_covered(sample)).any()


def test_all_types_share_size_and_photo_is_noisy():
    sample = scene.sample_scene(0, 3, cjk=False)
    images = {t: render.render_scene(sample, t, item_rng(0, 0)) for t in IMAGE_TYPES}
    assert {im.shape for im in images.values()} == {(sample.height, sample.width, 3)}
    assert len(np.unique(images["photo"].reshape(-1, 3), axis=0)) > 1000
    assert len(np.unique(images["cartoon"].reshape(-1, 3), axis=0)) < 200


def test_splits_and_scale_counts():
    splits = collections.Counter(split_of(0, 0, i) for i in range(1000))
    assert abs(splits["train"] - 700) <= 5 and abs(splits["val"] - 150) <= 5 and abs(splits["test"] - 150) <= 5
    assert counts_for_scale(1.0) == (100, 12)
    assert counts_for_scale(10.0) == (1000, 40)


def test_chinese_texts_are_skipped_without_a_cjk_font(monkeypatch):
    monkeypatch.setattr(fonts, "cjk_font_path", lambda: None)
    fonts.font.cache_clear()
    try:
        assert not fonts.cjk_available()
        with pytest.raises(LookupError):
            fonts.font("zh", 20)
        default = [scene.sample_scene(0, i) for i in range(40)]
        assert all(t.lang == "en" for s in default for t in s.texts)
        monkeypatch.setattr(scene, "ZH_P", 1.0)  # every text wants to be Chinese
        chinese = [scene.sample_scene(0, i) for i in range(40)]
        assert all(not s.texts for s in chinese)
        assert [s.objects for s in chinese] == [s.objects for s in default], "skipping shifted other draws"
        for s in chinese[:3]:
            for image_type in IMAGE_TYPES:
                render.render_scene(s, image_type, item_rng(0, 0))
    finally:
        fonts.font.cache_clear()


def test_chinese_texts_render_with_a_cjk_font():
    assert fonts.cjk_available(), "no CJK font: the cvttf-notosanscjk-regular dependency is missing"
    sample = next(s for s in (scene.sample_scene(0, i) for i in range(200)) if any(t.lang == "zh" for t in s.texts))
    render.render_scene(sample, "sketch", item_rng(0, 0))
