"""The training harness's bookkeeping: run files, progress (best epoch, patience) and resume."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from jobs.common import storage
from jobs.common.storage import write_json
from jobs.train.common import Progress, RunFiles, resume


def test_run_files_are_named_under_the_output():
    files = RunFiles("s3://bucket/run")
    assert files.latest == "s3://bucket/run/latest.json" and files.best == "s3://bucket/run/best.json"
    assert files.history == "s3://bucket/run/history.json"
    assert files.checkpoint(7) == "s3://bucket/run/checkpoints/epoch_0007.pt"


def test_progress_finds_the_first_best_epoch_and_counts_the_epochs_after_it():
    history = [{"val_loss": v} for v in (0.9, 0.5, 0.7, 0.5, 0.8)]
    progress = Progress(5, history, monitor="val_loss")
    assert progress.best() == 0.5
    assert progress.epochs_since_best() == 3  # the tie at epoch 3 is no improvement
    assert Progress(monitor="val_loss").best() == math.inf and Progress().epochs_since_best() == 0


def test_nan_is_never_the_best():
    progress = Progress(2, [{"val_loss": math.nan}, {"val_loss": math.nan}], monitor="val_loss")
    assert progress.best() == math.inf and progress.epochs_since_best() == 2
    progress.history.append({"val_loss": 1.0})
    assert progress.best() == 1.0 and progress.epochs_since_best() == 0


def test_resume_reads_the_latest_checkpoint_and_history(s3):
    from models.cam_net import CamNetConfig, build_cam_net
    from models.checkpoint import checkpoint_bytes

    files = RunFiles("s3://harness-test/run")
    storage.ensure_bucket(files.output)
    ckpt, progress = resume(files, enabled=True, monitor="val_loss")
    assert ckpt is None and progress == Progress(monitor="val_loss")
    cfg = CamNetConfig(arch="tiny", num_classes=2, width_mult=0.25)
    blob = checkpoint_bytes(build_cam_net(cfg), "cam_net", dataclasses.asdict(cfg), 4, 1, {}, {})
    storage.write_bytes(files.checkpoint(1), blob)
    write_json(files.history, [{"epoch": 0, "val_loss": 2.0}, {"epoch": 1, "val_loss": 1.0}])
    write_json(files.latest, {"epoch": 1, "checkpoint": files.checkpoint(1)})
    ckpt, progress = resume(files, enabled=True, monitor="val_loss")
    assert ckpt["epoch"] == 1 and isinstance(ckpt["state_dict"]["fc.weight"], torch.Tensor)
    assert progress.start == 2 and progress.best() == 1.0 and len(progress.history) == 2
    assert resume(files, enabled=False)[0] is None


@pytest.mark.parametrize(
    ("config", "bad", "message"),
    [
        ("configs/train_cam.yaml", {"model": {"sfs": {"bogus": 1}}}, "model.sfs.bogus"),
        ("configs/train_cam.yaml", {"train": {"optimizer": "adam"}}, "train.optimizer"),
        ("configs/train_fusion.yaml", {"model": {"modalites": ["text"]}}, "model.modalites"),
        ("configs/train_restore.yaml", {"generator": {"widht": 8}}, "generator.widht"),
        ("configs/train_restore.yaml", {"quality_model": {"hidden": "many"}}, "quality_model.hidden"),
    ],
)
def test_model_and_train_sections_fail_at_load_with_the_dotted_path(config, bad, message):
    from jobs.common.config import ConfigError, load_yaml
    from jobs.train.cam import TrainCamSettings
    from jobs.train.fusion import TrainFusionSettings
    from jobs.train.restore import TrainRestoreSettings

    model = {"cam": TrainCamSettings, "fusion": TrainFusionSettings, "restore": TrainRestoreSettings}
    settings = model[config.split("_")[1].split(".")[0]]
    assert load_yaml(settings, config)  # the committed config itself loads
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_yaml(settings, config, bad)


def test_sections_are_the_models_own_config_types():
    from jobs.train.cam import TrainCamSettings
    from models.cam_net import CamNetConfig
    from models.sfs import SFSConfig

    settings = TrainCamSettings.model_validate(
        {"output": "o", "data": {"manifest": "m"}, "model": {"sfs": {"cr": 0.6}}}
    )
    assert isinstance(settings.model, CamNetConfig) and settings.model.sfs == SFSConfig(cr=0.6)
    again = TrainCamSettings.model_validate(settings.model_dump(mode="json"))  # what a Ray Train worker receives
    assert again == settings
