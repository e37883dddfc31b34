import pytest

from jobs.common.config import ConfigError, ScoreConfig, load_config


def test_defaults_are_valid_and_every_stage_has_a_section():
    cfg = load_config()
    assert isinstance(cfg, ScoreConfig)
    for name in cfg.stages.run:
        assert getattr(cfg.stages, name).resources.num_cpus > 0


def test_shipped_configs_load():
    for name in ("configs/score.yaml", "configs/demo.yaml"):
        load_config(name)


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("decode:\n  video:\n    polcy: interval\n", "decode.video.polcy"),
        ("decode:\n  video:\n    policy: sometimes\n", "decode.video.policy"),
        ("output:\n  rows_per_file: 0\n", "output.rows_per_file"),
        ("stages:\n  quality:\n    resources:\n      concurrency: [3, 1]\n", "stages.quality.resources"),
        ("stages:\n  run: [quality, ocr_that_does_not_exist]\n", "stages"),
        ("nonsense: 1\n", "nonsense"),
    ],
)
def test_bad_keys_and_values_fail_naming_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert key in str(err.value)


def test_overrides_merge_into_the_file(tmp_path):
    cfg = load_config(_write(tmp_path, "decode:\n  video:\n    interval_s: 2.5\n"), {"decode": {"max_pixels": 10}})
    assert cfg.decode.video.interval_s == 2.5 and cfg.decode.max_pixels == 10


def test_relative_paths_resolve_from_the_working_directory_first_then_the_repository(tmp_path, monkeypatch):
    from pathlib import Path

    from jobs.common.config import REPO_ROOT, resolve_path

    monkeypatch.chdir(tmp_path)
    assert resolve_path("checkpoints/cam_tiny.pt") == str(REPO_ROOT / "checkpoints" / "cam_tiny.pt")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "cam_tiny.pt").write_bytes(b"mine")
    assert resolve_path("checkpoints/cam_tiny.pt") == str(tmp_path / "checkpoints" / "cam_tiny.pt")  # the user's wins
    assert resolve_path("nowhere/x.pt") == str(tmp_path / "nowhere" / "x.pt")  # the error will name this path
    assert resolve_path("s3://bucket/a b/x.pt") == "s3://bucket/a b/x.pt" and resolve_path(None) is None
    assert resolve_path("/abs/x.pt") == "/abs/x.pt" and Path(resolve_path("configs/demo.yaml")).is_absolute()


def test_a_config_names_its_files_as_written_and_runs_with_them_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: the shipped config is still found, so are its checkpoints
    cfg = load_config("configs/demo.yaml")
    assert cfg.stages.cam.checkpoint == "checkpoints/cam_lite0.pt"
    resolved = cfg.stages.resolved()
    for path in (resolved.cam.checkpoint, resolved.fusion.checkpoint, resolved.restore.quality_checkpoint):
        assert path.startswith("/") and path.endswith(".pt")
    assert cfg.stages.cam.checkpoint == "checkpoints/cam_lite0.pt" and type(resolved) is type(cfg.stages)
    assert resolved.ocr == cfg.stages.ocr and resolved.run == cfg.stages.run
