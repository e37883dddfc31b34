"""`mediascore restore` over images and a real H.264 video in S3, with a corrupt file among them; eval restore."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
import yaml
from PIL import Image

from jobs.cli import main
from jobs.common import storage
from jobs.eval.restore import EvalRestoreSettings, run_eval_restore
from jobs.media.restorer import Restorer
from jobs.media.videoenc import encode_frames
from jobs.train.restore import paths


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def media(s3):
    rng = np.random.default_rng(0)
    prefix = "s3://test-restore/media"
    still = (rng.random((90, 130, 3)) * 255).astype(np.uint8)
    storage.write_bytes(storage.join(prefix, "a/still.png"), _png(still))
    frames = [np.roll(still[:64, :96], i, axis=1).copy() for i in range(6)]
    storage.write_bytes(storage.join(prefix, "clip.mp4"), encode_frames(frames, "mp4", "libx264", 6, 6, (96, 64)))
    storage.write_bytes(storage.join(prefix, "broken.jpg"), b"\xff\xd8\xff not really a jpeg")
    return prefix, still


def test_restore_command_writes_images_and_videos_and_records_failures(restore_trained, media, capsys):
    settings, _ = restore_trained
    prefix, still = media
    output = "s3://test-restore/restored-media"
    code = main(["restore", "--input", prefix, "--output", output, "--checkpoint", paths(settings.output)["generator"],
                 "--tile", "48", "--overlap", "8"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["restored"] == 2 and summary["failed"] == 1
    report = json.loads(storage.read_bytes(storage.join(output, "_restore.json")))
    assert report["failed"][0]["source"].endswith("broken.jpg") and report["failed"][0]["error"]
    image = np.asarray(Image.open(io.BytesIO(storage.read_bytes(storage.join(output, "a/still.png")))))
    assert image.shape == still.shape
    expected = Restorer(paths(settings.output)["generator"], tile=48, overlap=8)(still)
    assert np.array_equal(image, expected)  # PNG: what the generator produced, bit for bit
    with av.open(io.BytesIO(storage.read_bytes(storage.join(output, "clip.mp4")))) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264"
    assert len(frames) == 6 and frames[0].shape == (64, 96, 3)


def test_eval_restore_reports_every_key(restore_trained, tmp_path):
    settings, _ = restore_trained
    config = tmp_path / "l1.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))  # the fixture's own run: no retraining
    eval_settings = EvalRestoreSettings(
        output="s3://test-restore/eval", photos=["coffee"], copies=2, models={"gan": str(config)}, tile=128, crop=64
    )
    result = run_eval_restore(eval_settings)
    for metric in ("psnr", "ssim"):
        for name in ("input", "classical", "gan"):
            assert np.isfinite(result[f"{metric}_{name}"])
    assert result["images"] == 2
    assert result["psnr_classical_fixed"] <= result["psnr_classical"] + 1e-6  # one pipeline for all <= best per image
    assert result["gan_minus_input_db"] == pytest.approx(result["psnr_gan"] - result["psnr_input"], abs=1e-3)
    crops = np.asarray(Image.open(io.BytesIO(storage.read_bytes("s3://test-restore/eval/crops.png"))))
    assert crops.shape[0] == 2 * (64 + 20) and crops.shape[1] == 4 * (64 + 4)  # clean, input, classical, gan
    cases = json.loads(storage.read_bytes("s3://test-restore/eval/cases.json"))
    assert [c["photo"] for c in cases] == ["coffee", "coffee"] and cases[0]["steps"] != cases[1]["steps"]


def test_eval_restore_refuses_a_model_trained_on_held_out_photos(tmp_path):
    config = tmp_path / "leak.yaml"
    never = str(tmp_path / "never")
    config.write_text(yaml.safe_dump({"output": never, "sources": {"photos": ["coffee"], "held_out": []}}))
    with pytest.raises(ValueError, match="coffee"):
        run_eval_restore(EvalRestoreSettings(output=never, photos=["coffee"], models={"l1": str(config)}))
