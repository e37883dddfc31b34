"""The HTML report of a ``score`` output: totals, errors by reason, score distributions and a sample of frames.

One self-contained file (inline SVG histograms, inline JPEG thumbnails), written beside the results.
"""

from __future__ import annotations

import base64
import html
import io
import math

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from jobs.common import storage
from jobs.common.config import VideoSampling
from jobs.common.storage import read_json
from jobs.media.decode import VideoFrame, decode_image, sample_video
from jobs.media.images import encode_image

THUMB_WIDTH = 200


STAGE_HISTOGRAMS = (
    "cam_score",
    "cam_mask_area",
    "ocr_count",
    "text_token_count",
    "obj_count",
    "fusion_score",
    "restore_quality_before",
    "restore_quality_after",
)


def _read_folder(output_uri: str, folder: str) -> pd.DataFrame:
    frames = []
    for obj in storage.list_objects(storage.join(output_uri, folder), extensions=[".parquet"]):
        fs, path = storage.resolve(obj.uri)
        frames.append(pd.read_parquet(path, filesystem=fs))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def histogram_svg(values: np.ndarray, title: str, bins: int = 30, width: int = 320, height: int = 140) -> str:
    """A small SVG histogram of the finite values."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return f"<div class='hist'><b>{html.escape(title)}</b><br>no values</div>"
    lo, hi = float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5))
    hi = hi if hi > lo else lo + 1e-9
    counts, _ = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    bar_w, top = width / bins, max(int(counts.max()), 1)
    bars = "".join(
        f"<rect x='{i * bar_w:.1f}' y='{height - 20 - c / top * (height - 30):.1f}' width='{bar_w - 1:.1f}' "
        f"height='{c / top * (height - 30):.1f}' fill='#4a7fb5'/>"
        for i, c in enumerate(counts)
    )
    labels = (
        f"<text x='0' y='{height - 4}' font-size='10'>{lo:.3g}</text>"
        f"<text x='{width}' y='{height - 4}' font-size='10' text-anchor='end'>{hi:.3g}</text>"
    )
    return (
        f"<div class='hist'><b>{html.escape(title)}</b> (n={values.size}, median {np.median(values):.3g})<br>"
        f"<svg width='{width}' height='{height}'>{bars}{labels}</svg></div>"
    )


def load_frame(uri: str, media_type: str, timestamp_s: float | None) -> np.ndarray:
    """The pixels of one output row, decoded again from its source."""
    data = storage.read_bytes(uri)
    if media_type == "image":
        return decode_image(data)[0]
    t = float(timestamp_s or 0.0)
    sampling = VideoSampling(policy="interval", interval_s=max(t, 1e-3), max_frames=2, seek_threshold_s=0.0)
    frames = [f for f in sample_video(io.BytesIO(data), sampling) if isinstance(f, VideoFrame)]
    return frames[-1].pixels if t > 0 else frames[0].pixels


def _thumb(pixels: np.ndarray) -> str:
    img = Image.fromarray(pixels)
    img.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 2))
    return base64.b64encode(encode_image(np.asarray(img), "JPEG", quality=80)).decode()


def _png(pixels: np.ndarray) -> str:
    return base64.b64encode(encode_image(pixels)).decode()


def cam_overlay(stage, pixels: np.ndarray, box) -> np.ndarray:
    """The CAM of the predicted class as a heatmap over the image, with the predicted box."""

    _, _, cams = stage.localize([pixels])
    height, width = pixels.shape[:2]
    heat = cv2.resize(cams[0], (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    out = np.ascontiguousarray((0.55 * pixels + 0.45 * colour).astype(np.uint8))
    if box is not None and len(box) == 4:
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), max(2, width // 150))
    return out


OCR_COLOUR = (40, 220, 60)
OBJECT_COLOURS = {"face": (255, 150, 0), "person": (60, 140, 255)}
KEY_COLOUR = (230, 30, 200)
WEIGHT_NAMES = ("text", "style", "object", "key")


def weights_svg(weights, width: int = 180, height: int = 70, names=WEIGHT_NAMES) -> str:
    """Modality weights as a bar chart, one bar per name (absent modalities marked n/a); by default the fusion
    stage's four modalities."""
    weights = weights if isinstance(weights, dict) else {}
    bar_h, parts = (height - 6) / len(names), []
    for i, name in enumerate(names):
        y, value = 3 + i * bar_h, weights.get(name)
        parts.append(f"<text x='0' y='{y + bar_h * 0.75:.1f}' font-size='10'>{name}</text>")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            parts.append(f"<text x='48' y='{y + bar_h * 0.75:.1f}' font-size='10' fill='#999'>n/a</text>")
            continue
        w = max(1.0, float(value) * (width - 80))
        parts.append(f"<rect x='48' y='{y + 1:.1f}' width='{w:.1f}' height='{bar_h - 2:.1f}' fill='#b5447a'/>")
        parts.append(f"<text x='{52 + w:.1f}' y='{y + bar_h * 0.75:.1f}' font-size='10'>{float(value):.2f}</text>")
    return f"<svg class='weights' width='{width}' height='{height}'>{''.join(parts)}</svg>"


def _has(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and len(value) > 0


def detections_overlay(pixels: np.ndarray, row) -> np.ndarray | None:
    """OCR quadrilaterals (numbered, the text goes in the caption) and object boxes (coloured by label) drawn over
    the frame; ``None`` when the row has neither."""

    quads, boxes = getattr(row, "ocr_boxes", None), getattr(row, "obj_boxes", None)
    key = getattr(row, "fusion_key_box", None)
    if not _has(quads) and not _has(boxes) and not _has(key):
        return None
    out = np.ascontiguousarray(pixels.copy())
    thick = max(2, pixels.shape[1] // 200)
    if _has(key):
        x0, y0, x1, y1 = (int(v) for v in key)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), KEY_COLOUR, thick + 1)
        cv2.putText(out, "key", (x0 + 4, y0 + 16), cv2.FONT_HERSHEY_SIMPLEX, max(0.5, thick / 3), KEY_COLOUR, thick)
    for i, quad in enumerate(quads if _has(quads) else [], start=1):
        pts = np.asarray(quad, np.int32).reshape(4, 2)
        cv2.polylines(out, [pts], True, OCR_COLOUR, thick)
        cv2.putText(out, str(i), (int(pts[0, 0]), max(12, int(pts[0, 1]) - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.5, thick / 3), OCR_COLOUR, thick)  # fmt: skip
    labels = getattr(row, "obj_labels", None)
    for box, label in zip(boxes if _has(boxes) else [], labels if _has(labels) else [], strict=False):
        x0, y0, x1, y1 = (int(v) for v in box)
        colour = OBJECT_COLOURS.get(str(label), (255, 255, 255))
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thick)
        cv2.putText(out, str(label), (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, max(0.5, thick / 3), colour,
                    thick)  # fmt: skip
    return out


def _caption_extras(r) -> str:
    parts = []
    score = getattr(r, "fusion_score", None)
    if isinstance(score, float) and math.isfinite(score):
        parts.append(f"fusion: <b>{html.escape(str(r.fusion_class))}</b> {score:.2f} {weights_svg(r.fusion_weights)}")
    lines = getattr(r, "ocr_lines", None)
    if _has(lines):
        parts.append("OCR: " + " | ".join(f"{i}. <b>{html.escape(str(t))}</b>" for i, t in enumerate(lines, 1)))
    elif isinstance(getattr(r, "ocr_text", None), str):
        parts.append("OCR: no text" + (" (presence check)" if getattr(r, "ocr_skipped", False) else ""))
    labels = getattr(r, "obj_labels", None)
    if _has(labels):
        counts = pd.Series(list(labels)).value_counts()
        parts.append("objects: " + ", ".join(f"{n} {html.escape(str(k))}" for k, n in counts.items()))
    return "<br>".join(parts)


def _cam_stage(output_uri: str):
    """The run's CAM stage, rebuilt from its config, when the run had one."""
    job = read_json(storage.join(output_uri, "_job.json")) or {}
    if "cam" not in job.get("stages", []):
        return None
    from jobs.common.config import CamConfig
    from jobs.score.stages.cam import CamStage

    return CamStage(CamConfig(**job["config"]["stages"]["cam"]))


def _gallery(rows: pd.DataFrame, n: int, seed: int = 0, cam_stage=None) -> str:
    ok = rows[rows.error.isna()]
    if ok.empty:
        return "<p>no rows</p>"
    picked = ok.sample(min(n, len(ok)), random_state=seed).sort_values(["source_uri", "frame_index"])
    cells = []
    for r in picked.itertuples():
        try:
            pixels = load_frame(r.source_uri, r.media_type, r.timestamp_s)
            img = f"<img src='data:image/jpeg;base64,{_thumb(pixels)}'>"
            if cam_stage is not None:
                overlay = cam_overlay(cam_stage, pixels, getattr(r, "cam_box", None))
                img += f"<img src='data:image/jpeg;base64,{_thumb(overlay)}'>"
            found = detections_overlay(pixels, r)
            if found is not None:
                img += f"<img src='data:image/jpeg;base64,{_thumb(found)}'>"
        except Exception as exc:  # the report must not fail on one unreadable source
            img = f"<i>cannot show: {html.escape(str(exc))}</i>"
        stats = " ".join(
            f"{c.removeprefix('quality_')}={getattr(r, c):.3g}"
            for c in rows.columns
            if c.startswith("quality_") and isinstance(getattr(r, c), float) and math.isfinite(getattr(r, c))
        )
        if isinstance(getattr(r, "cam_class", None), str):
            stats = f"CAM: <b>{html.escape(r.cam_class)}</b> p={r.cam_score:.2f} area={r.cam_mask_area:.2f}<br>{stats}"
        extras = _caption_extras(r)
        stats = f"{extras}<br>{stats}" if extras else stats
        name = html.escape(r.source_uri.rsplit("/", 1)[-1])
        where = f"frame {r.frame_index} @ {r.timestamp_s:.2f}s" if r.media_type == "video" else "image"
        cells.append(f"<figure>{img}<figcaption><b>{name}</b> {where}<br><small>{stats}</small></figcaption></figure>")
    return "<div class='gallery'>" + "".join(cells) + "</div>"


def _zoom(pixels: np.ndarray, size: int = 160) -> np.ndarray:
    """The centre ``size`` crop, shown at 2x so restored detail is visible."""
    h, w = pixels.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    crop = pixels[y : y + size, x : x + size]
    return cv2.resize(crop, (2 * crop.shape[1], 2 * crop.shape[0]), interpolation=cv2.INTER_NEAREST)


def _restore_pairs(rows: pd.DataFrame, n: int) -> str:
    """Before/after pairs of the restored frames with the lowest quality before, whole and zoomed."""
    if "restore_applied" not in rows.columns or not rows.restore_applied.fillna(False).astype(bool).any():
        return "<p>no restored frames</p>"
    picked = rows[rows.restore_applied.fillna(False).astype(bool)].nsmallest(n, "restore_quality_before")
    cells = []
    for r in picked.itertuples():
        try:
            before = load_frame(r.source_uri, r.media_type, r.timestamp_s)
            after = decode_image(storage.read_bytes(r.restore_uri))[0]
            img = "".join(f"<img src='data:image/jpeg;base64,{_thumb(p)}'>" for p in (before, after))
            img += "<br>" + "".join(f"<img src='data:image/png;base64,{_png(_zoom(p))}'>" for p in (before, after))
        except Exception as exc:  # the report must not fail on one unreadable file
            img = f"<i>cannot show: {html.escape(str(exc))}</i>"
        name = html.escape(r.source_uri.rsplit("/", 1)[-1])
        quality = f"quality {r.restore_quality_before:.0f} &rarr; {r.restore_quality_after:.0f}"
        cells.append(f"<figure>{img}<figcaption><b>{name}</b> before | after; {quality}</figcaption></figure>")
    return "<div class='gallery'>" + "".join(cells) + "</div>"


def _table(data: dict) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in data.items())
    return f"<table>{body}</table>"


def build_report(output_uri: str, samples: int = 12) -> str:
    """The report of ``output_uri`` as an HTML string."""
    manifest = read_json(storage.join(output_uri, "_manifest.json")) or {}
    summary = manifest.get("summary", {})
    rows, dead = _read_folder(output_uri, "rows"), _read_folder(output_uri, "dead_letter")
    errors = summary.pop("errors_by_reason", {})
    summary.pop("locations", None)
    numeric = [c for c in rows.columns if c.startswith("quality_")] + [c for c in STAGE_HISTOGRAMS if c in rows.columns]
    hists = "".join(histogram_svg(rows[c].to_numpy(dtype=float), c) for c in numeric if rows[c].notna().any())
    dead_rows = "".join(
        f"<tr><td>{html.escape(r.source_uri)}</td><td>{html.escape(r.error_code)}</td><td>{html.escape(r.error)}</td></tr>"
        for r in dead.head(100).itertuples()
    )
    gallery = _gallery(rows, samples, cam_stage=_cam_stage(output_uri)) if not rows.empty else "<p>no rows</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mediascore report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:left;font-size:13px}} .hist{{display:inline-block;margin:8px}} .gallery{{display:flex;
flex-wrap:wrap}} figure{{margin:6px;font-size:11px;max-width:{3 * THUMB_WIDTH + 12}px}}
figure img{{margin-right:4px}}</style></head><body>
<h1>mediascore score report</h1><p>{html.escape(output_uri)}</p>
<h2>Summary</h2>{_table(summary)}
<h2>Errors by reason</h2>{_table(errors) if errors else "<p>none</p>"}
<h2>Score distributions</h2>{hists or "<p>no stage values (inventory run)</p>"}
<h2>Sample of rows</h2>{gallery}
<h2>Restored frames (before | after, centre zoomed 2x)</h2>{_restore_pairs(rows, 6) if not rows.empty else ""}
<h2>Dead letter ({len(dead)})</h2><table><tr><th>source</th><th>reason</th><th>error</th></tr>{dead_rows}</table>
</body></html>"""


def write_report(output_uri: str, samples: int = 12) -> str:
    """Write ``report.html`` under the output; returns its URI."""
    uri = storage.join(output_uri, "report.html")
    storage.write_bytes(uri, build_report(output_uri, samples).encode())
    return uri
