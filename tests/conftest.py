"""Shared fixtures: one real SeaweedFS S3 server and one local Ray for the whole session."""

from __future__ import annotations

import io
import os
import socket

import pytest

from jobs.common import storage
from jobs.common.s3server import EmbeddedS3
from jobs.common.storage import read_json


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return _free_port()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """The embedded S3 server on a free port, with the AWS variables pointing at it (set before Ray starts, so
    that Ray's workers inherit them)."""
    server = EmbeddedS3(home=tmp_path_factory.mktemp("s3home"), port=_free_port())
    state = server.up()
    saved = {k: os.environ.get(k) for k in state.env()}
    os.environ.update(state.env())
    yield state
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.down()


TRICKY_KEYS = (
    "img/with space #1 + 50%.png",  # the one the issue names
    "img/hash#fragment.png",
    "img/plus+sign.png",
    "img/plus sign.png",  # what "+" means in a form-encoded query: a different object
    "img/percent%.png",
    "img/question?x=1.png",
    "img/amp&and.png",
    "img/equals=sign.png",
    "img/semi;colon.png",
    "img/at@sign.png",
    "img/colon:name.png",
    "img/comma,name.png",
    "img/apos'trophe.png",
    'img/double"quote.png',
    "img/pct%20lit.png",  # looks URL-encoded ...
    "img/pct lit.png",  # ... and its decoded twin is a different object
    "img/pct%2Fslash.png",
    "img/中文 名字.jpg",
    "a/b/c/d/e/f/g.png",  # a deep prefix
)


def _tricky_image(index: int, jpeg: bool) -> tuple[bytes, tuple[int, int]]:
    """A small image whose size (width, height) is unique to ``index``, so a read of the wrong object shows."""
    import io

    import numpy as np
    from PIL import Image

    width, height = 40 + index, 32 + 2 * index
    pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG" if jpeg else "PNG")
    return buf.getvalue(), (width, height)


@pytest.fixture(scope="session")
def tricky_keys() -> tuple[str, ...]:
    """Legal S3 keys that URL parsing, quoting or globbing would change: spaces, ``# + % ? & = ; @ : , ' "``,
    ``%20``-looking sequences beside their decoded twins, unicode and a deep prefix."""
    return TRICKY_KEYS


@pytest.fixture(scope="session")
def put_tricky_images(s3):
    """Writes one small image per key of ``TRICKY_KEYS`` under ``s3://<bucket>/<folder>`` with boto3's own
    ``put_object`` (not with the code under test); returns ``{uri: (width, height)}``."""

    def put(prefix: str) -> dict[str, tuple[int, int]]:
        bucket, _, folder = prefix.removeprefix("s3://").partition("/")
        storage.ensure_bucket(f"s3://{bucket}")
        sizes = {}
        for i, key in enumerate(TRICKY_KEYS):
            data, size = _tricky_image(i, jpeg=key.endswith(".jpg"))
            storage.s3_client().put_object(Bucket=bucket, Key=f"{folder}/{key}", Body=data)
            sizes[f"s3://{bucket}/{folder}/{key}"] = size
        return sizes

    return put


@pytest.fixture(scope="session")
def ray_local(s3):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def corpus(s3, tmp_path_factory):
    """A small corpus in S3: its URI and its manifest as a DataFrame."""
    import pandas as pd

    from jobs.corpus import MANIFEST_NAME, make_corpus

    uri = "s3://test-corpus/c1"
    make_corpus(uri, seed=7, n_scenes=6, n_videos=4, workers=4)
    fs, path = storage.resolve(storage.join(uri, MANIFEST_NAME))
    manifest = pd.read_parquet(path, filesystem=fs)
    return uri, manifest


def _cam_settings(corpus_uri: str, output: str, epochs: int):
    from jobs.train.cam import TrainCamSettings

    return TrainCamSettings.model_validate(
        {
            "data": {
                "manifest": storage.join(corpus_uri, "manifest.parquet"),
                "image_size": 64,
                "val_splits": ["val", "test"],
                "val_image_types": ["photo", "sketch", "cartoon"],
            },
            "output": output,
            "model": {"arch": "tiny", "num_classes": 6, "width_mult": 0.25, "insert_after": ["conv3_2"]},
            "train": {"epochs": epochs, "batch_size": 16},
            "ray": {"num_cpus": 2},
        }
    )


@pytest.fixture(scope="session")
def trained(ray_local, corpus):
    """A one-epoch run, then the same run asked for two epochs: it must resume at the second."""
    from jobs.train.cam import run_train_cam

    corpus_uri, _ = corpus

    output = "s3://test-train/cam"
    run_train_cam(_cam_settings(corpus_uri, output, epochs=1))
    first = read_json(storage.join(output, "latest.json"))
    run_train_cam(_cam_settings(corpus_uri, output, epochs=2))
    return output, first


@pytest.fixture(scope="session")
def fusion_trained(ray_local):
    """A small risk corpus and a short fusion training on it (frozen upstream: the committed CAM checkpoint);
    then the same run again, which must resume instead of retraining."""
    from jobs.corpus import make_corpus
    from jobs.train.fusion import TrainFusionSettings, run_train_fusion

    uri = "s3://test-fusion/corpus"
    make_corpus(uri, seed=11, n_scenes=36, n_videos=0, workers=4, risk=True)
    settings = TrainFusionSettings.model_validate(
        {
            "data": {
                "manifest": storage.join(uri, "manifest.parquet"),
                "features": "s3://test-fusion/features",
                "cache": "s3://test-fusion/cache",
                "cam_checkpoint": "checkpoints/cam_tiny.pt",
                "score_config": "configs/fusion_features.yaml",
                "test_splits": ["test", "val"],
            },
            "output": "s3://test-fusion/run",
            "model": {"dim": 32, "layers": 1, "heads": 2, "image_size": 64, "key_crop": 32},
            "train": {"epochs": 8, "batch_size": 16, "lr": 0.003, "patience": 0},
        }
    )
    best = run_train_fusion(settings)
    history = read_json(storage.join(settings.output, "history.json"))
    run_train_fusion(settings)
    return settings, best, history


def restore_settings_dict(output: str, epochs: int) -> dict:
    """A tiny restoration run: two photos, 32 px patches, an 8-channel generator."""
    return {
        "output": output,
        "sources": {"photos": ["camera", "brick"]},
        "quality": {"crops": 240, "crop": 32, "epochs": 2, "judge_patches": 4},
        "quality_model": {"widths": [8, 16], "hidden": 16},
        "patch": 32,
        "patch_stride": 16,
        "max_patches_per_image": 400,
        "max_val": 64,
        "generator": {"width": 8, "levels": 1, "blocks": 1, "middle_blocks": 1},
        "discriminator": {"width": 8, "layers": 2},
        "train": {"epochs": epochs, "batch_size": 16, "lr_g": 0.002, "warmup_steps": 20, "ema_decay": 0.9},
        "ray": {"num_cpus": 2},
    }


@pytest.fixture(scope="session")
def restore_trained(ray_local):
    """A short GAN run in S3 (2 epochs), then the same run asked for 3: it must resume at the third."""
    from jobs.train.restore import TrainRestoreSettings, run_train_restore

    output = "s3://test-restore/run"
    run_train_restore(TrainRestoreSettings.model_validate(restore_settings_dict(output, epochs=2)))
    first = read_json(storage.join(output, "history.json"))
    settings = TrainRestoreSettings.model_validate(restore_settings_dict(output, epochs=3))
    run_train_restore(settings)
    return settings, first


SCOREFUSION_ROOT = "s3://test-scorefusion"


def write_table(uri: str, table) -> None:
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    storage.write_bytes(uri, buf.getvalue())


def _scorefusion_settings(manifest: str):
    from jobs.train.scorefusion import TrainScoreFusionSettings

    return TrainScoreFusionSettings.model_validate({
        "data": {"manifest": manifest, "image_size": 32, "depth": 4, "folds": 2,
                 "modalities": [{"name": "infrared", "in_channels": 1},
                                {"name": "clip", "dims": 3, "init": "inflate", "removal": "frame_code"}]},
        "output": f"{SCOREFUSION_ROOT}/run", "train": {"epochs": 1, "batch_size": 8}, "ray": {"num_cpus": 2},
    })  # fmt: skip


@pytest.fixture(scope="session")
def scorefusion_run(ray_local):
    """16 samples. What training may read is the training split: here the test split's files do not exist and
    its labels are not labels, so a run that touched them would fail or record them. One training clip is
    garbage and one training sample has no clip at all."""
    import pandas as pd

    from jobs.corpus.multimodal import make_multimodal
    from jobs.train.scorefusion import run_train_scorefusion

    real = make_multimodal(
        f"{SCOREFUSION_ROOT}/set", seed=3, samples=16, folds=2, size=32, modalities=("infrared", "clip")
    )
    manifest = pd.read_parquet(io.BytesIO(storage.read_bytes(real)))
    train_ids = sorted(manifest[manifest.split == "train"].sample_id.unique())
    broken, lacking = train_ids[0], train_ids[1]
    storage.write_bytes(manifest[(manifest.sample_id == broken) & (manifest.modality == "clip")].uri.iloc[0], b"x")
    blind = manifest[~((manifest.sample_id == lacking) & (manifest.modality == "clip"))].copy()
    test = blind.split == "test"
    blind.loc[test, "uri"] = f"{SCOREFUSION_ROOT}/nowhere/" + blind.loc[test, "sample_id"] + ".png"
    blind.loc[test, "label"] = "unknowable"
    write_table(f"{SCOREFUSION_ROOT}/blind.parquet", blind)
    settings = _scorefusion_settings(f"{SCOREFUSION_ROOT}/blind.parquet")
    record = run_train_scorefusion(settings)
    return settings, record, manifest, train_ids, (broken, lacking), real
