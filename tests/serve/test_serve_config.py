"""The serve configs: what ships loads, the Serve config file stays in step with it, and user_config carries
only what each deployment needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobs.common.config import REPO_ROOT as ROOT
from jobs.common.config import ConfigError
from serve.app import app_builder, serve_config, user_config
from serve.config import load_serve_settings
from serve.models import MODELS, deployed


def test_the_shipped_configs_load_and_the_serve_config_file_is_in_step():
    from ray.serve.schema import ServeDeploySchema

    settings = load_serve_settings("configs/serve.yaml")
    shipped = yaml.safe_load((ROOT / "configs" / "serve_app.yaml").read_text())
    assert shipped == serve_config(settings), "remake it: mediascore serve --write-serve-config configs/serve_app.yaml"
    app = ServeDeploySchema.model_validate(shipped).applications[0]
    assert app.import_path == "serve.app:app_builder"
    assert {d.name for d in app.deployments} == {cls.__name__ for cls in MODELS.values()} - {"ScoreFusionModel"}
    assert app_builder(app.args) is not None and app_builder({"config": "configs/serve.yaml"}) is not None


def test_the_multi_modal_deployment_exists_only_with_a_checkpoint():
    settings = load_serve_settings("configs/serve.yaml")
    assert "scorefusion" not in deployed(settings.models)
    with_model = load_serve_settings("configs/serve.yaml", {"models": {"scorefusion": {"checkpoint": "s3://m/sf.pt"}}})
    names = {d["name"] for d in serve_config(with_model)["applications"][0]["deployments"]}
    assert "ScoreFusionModel" in names and set(user_config(MODELS["scorefusion"], with_model)["models"]) == {
        "scorefusion"
    }


def test_user_config_holds_only_the_sections_a_deployment_uses():
    settings = load_serve_settings("configs/serve.yaml", {"models": {"restore": {"tile": 128}}})
    assert set(user_config(MODELS["restore"], settings)["models"]) == {"restore"}
    assert set(user_config(MODELS["score"], settings)["models"]) <= {"ocr", "text_embed", "objects", "fusion", "cam"}
    assert user_config(MODELS["restore"], settings)["max_batch_size"] == settings.restore_deployment.max_batch_size


def test_relative_checkpoints_resolve_into_the_repository_and_uris_stay():
    settings = load_serve_settings(overrides={"models": {"cam": {"checkpoint": "checkpoints/cam_tiny.pt"},
                                                         "fusion": {"checkpoint": "s3://m/f.pt"}}})  # fmt: skip
    resolved = settings.models.resolved()
    assert Path(resolved.cam.checkpoint) == ROOT / "checkpoints" / "cam_tiny.pt"
    assert Path(resolved.cam.checkpoint).exists()
    assert resolved.fusion.checkpoint == "s3://m/f.pt"
    assert settings.models.cam.checkpoint == "checkpoints/cam_tiny.pt"  # the config itself keeps what was written


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match=r"score_deployment\.max_batch_size"):
        load_serve_settings(overrides={"score_deployment": {"max_batch_size": 0}})
    with pytest.raises(ConfigError, match="nonsense"):
        load_serve_settings(overrides={"nonsense": 1})


def test_uri_prefixes_end_on_a_segment_and_refuse_file_urls_relative_paths_and_dot_segments():
    settings = load_serve_settings(overrides={"uri_prefixes": ["s3://media", "s3://", "/srv/frames"]})
    assert settings.uri_prefixes == ["s3://media/", "s3://", "/srv/frames/"]
    for bad in ("file:///etc/", "frames/", "s3://media/../models/", "/srv/./frames/", "http://169.254.169.254/"):
        with pytest.raises(ConfigError, match="uri_prefixes"):
            load_serve_settings(overrides={"uri_prefixes": [bad]})


def test_dot_segments_are_found_with_either_separator():
    from serve.config import has_dot_segment

    assert has_dot_segment("s3://media/a/../b") and has_dot_segment("/srv/x/..") and has_dot_segment("a\\..\\b")
    assert not has_dot_segment("s3://media/a..b/.hidden/c...png")
