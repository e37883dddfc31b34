"""One modality of a multi-modal sample, from its bytes to the array its network takes. Ray-free.

What a file is follows its name: ``.png``/``.jpg``/... an image, ``.npy`` a NumPy array, ``.nii``/``.nii.gz`` a
NIfTI volume (``nibabel``), ``.mp4``/``.webm``/``.mkv``/... a video clip (decoded by the score pipeline's own
sampler, every frame, then ``depth`` of them evenly spaced). The result is ``float32`` in the space the
EfficientNet weights expect:

* 2D: ``(C, size, size)``; 3D: ``(C, depth, size, size)``. ``C`` is the spec's ``in_channels``: RGB, or the mean of
  the colour channels for one channel.
* 8-bit pixels map as ``(x - 127) / 128`` (the Lite0 weights' own normalisation). Anything else (float depth maps,
  MRI intensities) is first stretched so its 1st and 99th percentiles fall on 0 and 255, per sample: volumes have
  no common unit, and the patent only says "normalise".

**Removal of irrelevant content** (claim 3, the patent's skull stripping) runs before resizing: ``none``;
``frame_code`` (the corpus videos' frame-code band along the bottom of every frame is cropped away);
``boxes`` (everything outside the union of boxes given in ``[x0, y0, x1, y1]`` fractions, from an earlier stage's
detections, is set to the sample's median). What ran is returned, so it is recorded per sample.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import PurePosixPath

import cv2
import numpy as np

from jobs.media.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")
REMOVALS = ("none", "frame_code", "boxes")
MAX_VOLUME_BYTES = 1 << 30  # a .nii.gz inflating past this is refused (a gzip bomb), before it is held
FRAME_CODE_HEIGHT = 24  # the corpus videos' band (jobs.corpus.video.STRIP_HEIGHT; inference may not import it)


def kind_of(name: str) -> str:
    """``image``, ``array``, ``nifti`` or ``video``, from the file name."""
    lower = name.lower()
    if lower.endswith((".nii", ".nii.gz")):
        return "nifti"
    suffix = PurePosixPath(lower).suffix
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix == ".npy":
        return "array"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise DecodeError("modality_unknown_kind", f"cannot tell what {name!r} is from its name")


def read_raw(data: bytes, name: str, depth: int = 8, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The file as an array: images ``(H, W, 3)`` RGB (the score job's decoder: EXIF orientation, every mode to
    RGB, the pixel count checked from the header against ``max_pixels``), videos ``(D, H, W, 3)`` (``depth``
    evenly spaced frames), arrays and NIfTI volumes as stored. Raises :class:`DecodeError` with the reason."""
    kind = kind_of(name)
    try:
        if kind == "image":
            return decode_image(data, max_pixels)[0]
        if kind == "array":
            return np.load(io.BytesIO(data), allow_pickle=False)
        if kind == "nifti":
            return _read_nifti(data, name)
        return _read_clip(data, depth)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"modality_{kind}_error", f"{name}: {type(exc).__name__}: {exc}") from None


def _read_nifti(data: bytes, name: str) -> np.ndarray:
    import nibabel

    raw = _gunzip(data, MAX_VOLUME_BYTES) if name.lower().endswith(".gz") else data
    with tempfile.NamedTemporaryFile(suffix=".nii") as f:  # nibabel reads files; small volumes, so a temp file
        f.write(raw)
        f.flush()
        return np.asarray(nibabel.load(f.name).get_fdata(dtype=np.float32))


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:
        raise DecodeError("modality_too_large", f"the volume inflates past {limit} bytes")
    return out


def _read_clip(data: bytes, depth: int) -> np.ndarray:
    from jobs.common.config import VideoSampling
    from jobs.media.decode import VideoFrame, sample_video

    frames = [f.pixels for f in sample_video(io.BytesIO(data), VideoSampling(policy="all", max_frames=4096))
              if isinstance(f, VideoFrame)]  # fmt: skip
    if not frames:
        raise DecodeError("modality_video_error", "the clip has no frames")
    pick = np.linspace(0, len(frames) - 1, depth).round().astype(int)
    return np.stack([frames[i] for i in pick])


def remove_irrelevant(raw: np.ndarray, kind: str, removal: str, boxes: Sequence[Sequence[float]] | None = None):
    """``raw`` with the content ``removal`` names taken away (see the module docstring)."""
    if removal not in REMOVALS:
        raise ValueError(f"removal must be one of {REMOVALS}, got {removal!r}")
    if removal == "frame_code":
        if kind != "video":
            return raw
        return raw[:, : raw.shape[1] - FRAME_CODE_HEIGHT]
    if removal == "boxes" and boxes:
        spatial = (raw.shape[1], raw.shape[2]) if kind == "video" else raw.shape[:2]
        h, w = spatial
        keep = np.zeros(spatial, bool)
        for x0, y0, x1, y1 in boxes:
            keep[int(y0 * h) : int(np.ceil(y1 * h)), int(x0 * w) : int(np.ceil(x1 * w))] = True
        out = raw.copy()
        fill = np.median(raw)
        if kind == "video":
            out[:, ~keep] = fill
        else:
            out[~keep] = fill
        return out
    return raw


def _to_8bit_scale(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32)
    lo, hi = np.percentile(x, [1, 99])
    return np.clip((x.astype(np.float32) - lo) / max(float(hi - lo), 1e-6) * 255, 0, 255)


def _resize_planes(planes: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W)`` -> ``(N, size, size)``, area interpolation when shrinking."""
    interp = cv2.INTER_AREA if planes.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(p, (size, size), interpolation=interp) for p in planes])


def to_network_input(raw: np.ndarray, kind: str, dims: int, in_channels: int, size: int, depth: int) -> np.ndarray:
    """``float32`` ``(C, size, size)`` or ``(C, depth, size, size)``, normalised (module docstring)."""
    x = _to_8bit_scale(raw)
    if kind == "video":  # (D, H, W, 3)
        vol = np.moveaxis(x, -1, 0)  # (3, D, H, W)
    elif x.ndim == 2:
        vol = x[None]  # (1, H, W)
    elif x.ndim == 3 and (kind == "image" or dims == 2):
        vol = np.moveaxis(x, -1, 0)  # (C, H, W): channels last, as images are stored
    elif x.ndim == 3:  # a volume (H, W, D) as NIfTI stores it, or (D, H, W) as NumPy: depth is the shortest axis
        axis = int(np.argmin(x.shape))
        vol = np.moveaxis(x, axis, 0)[None]  # (1, D, H, W)
    else:
        raise DecodeError("modality_shape", f"an array of shape {raw.shape} is neither an image nor a volume")
    vol = _channels(vol, in_channels)
    if dims == 2:
        if vol.ndim == 4:
            raise DecodeError("modality_shape", f"a volume {raw.shape} for a 2D network")
        out = _resize_planes(vol, size)
    else:
        if vol.ndim == 3:  # an image for a 3D network: one slice repeated
            vol = np.repeat(vol[:, None], depth, axis=1)
        c, d = vol.shape[:2]
        planes = _resize_planes(vol.reshape(c * d, *vol.shape[2:]), size).reshape(c, d, size, size)
        pick = np.linspace(0, d - 1, depth).round().astype(int)
        out = planes[:, pick]
    return ((out - 127.0) / 128.0).astype(np.float32)


def _channels(vol: np.ndarray, in_channels: int) -> np.ndarray:
    c = vol.shape[0]
    if c == in_channels:
        return vol
    if in_channels == 1:
        return vol.mean(axis=0, keepdims=True)
    if c == 1:
        return np.repeat(vol, in_channels, axis=0)
    raise DecodeError("modality_channels", f"{c} channels for a network with {in_channels}")


def load_modality(data: bytes, name: str, dims: int, in_channels: int, size: int, depth: int = 8,
                  removal: str = "none", boxes=None) -> np.ndarray:  # fmt: skip
    """Bytes of one modality -> its network input (raises :class:`DecodeError` with a reason)."""
    kind = kind_of(name)
    raw = remove_irrelevant(read_raw(data, name, depth), kind, removal, boxes)
    return to_network_input(raw, kind, dims, in_channels, size, depth)


def augment_params(rng: np.random.Generator, crop: float) -> dict:
    """One draw of claim 2's expansion: a horizontal flip, a rotation by a multiple of 90 degrees and a crop of
    side ``crop`` (a fraction, 1: none) at a random place; applied to every modality of a sample alike."""
    side = rng.uniform(crop, 1.0) if crop < 1 else 1.0
    return {"flip": bool(rng.random() < 0.5), "rot": int(rng.integers(4)), "side": side,
            "x0": float(rng.random()), "y0": float(rng.random())}  # fmt: skip


def sample_augment_params(seed: int, sample_id: str, epoch: int, crop: float) -> dict:
    """The draw of :func:`augment_params` for one sample in one epoch: it depends on ``(seed, sample_id, epoch)``
    only, so every modality of the sample, trained in its own job, is flipped, turned and cropped alike."""
    digest = hashlib.sha1(f"{seed}/{sample_id}/{epoch}".encode()).digest()
    return augment_params(np.random.default_rng(int.from_bytes(digest[:8], "little")), crop)


def augment(x: np.ndarray, params: dict) -> np.ndarray:
    """``x`` (``(C, H, W)`` or ``(C, D, H, W)``, square) flipped, rotated and cropped by ``params`` (the last two
    axes only, so a volume's depth order is kept), resized back to its size."""
    if params["flip"]:
        x = x[..., ::-1]
    x = np.rot90(x, params["rot"], axes=(-2, -1))
    size = x.shape[-1]
    if params["side"] < 1:
        s = max(2, round(params["side"] * size))
        y0, x0 = round(params["y0"] * (size - s)), round(params["x0"] * (size - s))
        crop = np.ascontiguousarray(x[..., y0 : y0 + s, x0 : x0 + s])
        flat = crop.reshape(-1, s, s)
        x = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_LINEAR) for p in flat]).reshape(
            *crop.shape[:-2], size, size
        )
    return np.ascontiguousarray(x, dtype=np.float32)
