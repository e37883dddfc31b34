"""One modality from its bytes to its network input: images, NumPy and NIfTI volumes, video clips as volumes;
the removals; the augmentation shared by every modality of a sample."""

from __future__ import annotations

import gzip
import io

import nibabel
import numpy as np
import pytest
from PIL import Image

from jobs.corpus.multimodal import CLIP_SIZE, Geometry, render_clip
from jobs.media.decode import DecodeError
from jobs.media.modalities import (
    FRAME_CODE_HEIGHT,
    _gunzip,
    augment,
    load_modality,
    read_raw,
    remove_irrelevant,
    sample_augment_params,
    to_network_input,
)
from jobs.media.videoenc import encode_frames


def _nifti(volume: np.ndarray) -> bytes:
    image = nibabel.Nifti1Image(volume, affine=np.eye(4))
    return image.to_bytes()


def test_a_nifti_volume_keeps_its_intensities_and_becomes_a_depth_first_volume():
    volume = np.zeros((40, 32, 6), np.float32)  # (H, W, D) as NIfTI stores a stack of axial slices
    volume[:, :, 3] = 1000.0
    raw = read_raw(_nifti(volume), "t1.nii")
    assert raw.shape == (40, 32, 6) and raw[0, 0, 3] == pytest.approx(1000.0)
    assert read_raw(gzip.compress(_nifti(volume)), "t1.nii.gz").shape == (40, 32, 6)
    x = load_modality(_nifti(volume), "t1.nii", dims=3, in_channels=1, size=16, depth=6)
    assert x.shape == (1, 6, 16, 16) and x.dtype == np.float32
    bright = x[0].mean(axis=(1, 2))
    assert bright.argmax() == 3 and bright[3] > bright[0]  # the bright slice stays in its place along depth


def test_a_numpy_depth_map_is_stretched_to_the_8_bit_range_per_sample():
    depth = np.linspace(3.0, 6.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    buf = io.BytesIO()
    np.save(buf, depth)
    x = load_modality(buf.getvalue(), "depth.npy", dims=2, in_channels=1, size=32)
    assert x.shape == (1, 32, 32) and x.min() >= -127 / 128 - 1e-6 and x.max() <= 1.0
    assert x.max() - x.min() > 1.8  # metres were mapped onto the whole range, not left near (3 - 127) / 128
    with pytest.raises(DecodeError, match="volume"):
        to_network_input(np.zeros((4, 8, 8, 2), np.float32), "array", 2, 1, 8, 4)


def test_a_video_clip_becomes_a_channels_first_volume_in_frame_order():
    frames = render_clip(np.random.default_rng(0), Geometry("disc", 0.5, 0.5, 0.3), cue=1)  # moves right
    clip = encode_frames(frames, "mp4", "libx264", 8, 8, CLIP_SIZE)
    raw = read_raw(clip, "clip.mp4", depth=8)
    assert raw.shape == (8, CLIP_SIZE[1], CLIP_SIZE[0], 3)
    stripped = remove_irrelevant(raw, "video", "frame_code")
    assert stripped.shape == (8, CLIP_SIZE[1] - FRAME_CODE_HEIGHT, CLIP_SIZE[0], 3)
    x = load_modality(clip, "clip.mp4", dims=3, in_channels=3, size=32, depth=8, removal="frame_code")
    assert x.shape == (3, 8, 32, 32)
    kept = load_modality(clip, "clip.mp4", dims=3, in_channels=3, size=32, depth=8)
    assert not np.allclose(x, kept)  # the band was there and is gone
    scene = stripped.astype(np.float32)
    moving = np.abs(scene - np.median(scene, axis=0)).sum(axis=(1, 3))  # (D, W): where each frame differs
    centre = (moving * np.arange(scene.shape[2])).sum(1) / moving.sum(1)
    assert centre[-1] > centre[0] + 20  # the object moved right: the frames kept their order


def test_the_boxes_remover_keeps_only_what_the_boxes_cover():
    image = np.full((20, 20, 3), 200, np.uint8)
    image[:10, :10] = 10
    out = remove_irrelevant(image, "image", "boxes", boxes=[[0.0, 0.0, 0.5, 0.5]])
    assert (out[:10, :10] == 10).all() and (out[10:, :] == np.median(image)).all()
    assert remove_irrelevant(image, "image", "frame_code") is image  # the band is a video's only
    with pytest.raises(ValueError, match="removal"):
        remove_irrelevant(image, "image", "skull")


def test_unreadable_files_raise_a_decode_error_with_the_reason():
    with pytest.raises(DecodeError) as info:
        read_raw(b"not a png", "visible.png")
    assert info.value.code.startswith("image_")
    bomb = Image.new("L", (4000, 4000))
    buf = io.BytesIO()
    bomb.save(buf, format="PNG")
    with pytest.raises(DecodeError) as info:
        read_raw(buf.getvalue(), "infrared.png", max_pixels=1_000_000)  # refused from the header
    assert info.value.code == "image_too_large"
    with pytest.raises(DecodeError) as info:
        _gunzip(gzip.compress(b"\0" * 4096), limit=1024)  # a .nii.gz that inflates past the limit
    assert info.value.code == "modality_too_large"
    with pytest.raises(DecodeError) as info:
        read_raw(b"\x00" * 100, "scan.nii")
    assert info.value.code == "modality_nifti_error"
    with pytest.raises(DecodeError, match="cannot tell"):
        read_raw(b"", "notes.txt")


def test_every_modality_of_a_sample_gets_the_same_flip_turn_and_crop():
    grey = np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64)
    rgb = np.repeat(grey, 3, axis=0)
    volume = np.repeat(grey[:, None], 4, axis=1)  # (1, D, H, W)
    draws = [sample_augment_params(7, "s00012", epoch, crop=0.6) for epoch in range(6)]
    assert len({str(d) for d in draws}) > 1  # epochs differ
    for params in draws:
        assert params == sample_augment_params(7, "s00012", draws.index(params), crop=0.6)
        a, b, c = augment(grey, params), augment(rgb, params), augment(volume, params)
        assert np.allclose(a[0], b[1]) and all(np.allclose(a[0], c[0, d]) for d in range(4))
    assert sample_augment_params(7, "s00013", 0, 0.6) != draws[0]
