import subprocess
import sys

import pytest

from jobs.cli import build_parser, parse_stages

COMMANDS = ["s3", "make-corpus", "score", "demo"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=120)


def test_every_subcommand_has_help():
    top = _run("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
    for command in COMMANDS:
        result = _run(command, "--help")
        assert result.returncode == 0 and "usage: mediascore" in result.stdout, command


def test_parse_stages():
    assert parse_stages(None) is None
    assert parse_stages("none") == []
    assert parse_stages("quality, ocr") == ["quality", "ocr"]


def test_an_unknown_stage_is_a_config_error_naming_it(tmp_path):
    result = _run("score", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--stages", "quality,nope")
    assert result.returncode == 2
    assert "nope" in result.stderr and "stages" in result.stderr


def test_an_empty_input_is_an_error_not_an_empty_run(tmp_path):
    (tmp_path / "in").mkdir()
    result = _run("score", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "nothing to score" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["score", "--input", "x"], ["s3", "sideways"], ["make-corpus"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


@pytest.mark.parametrize("flag", ["--input", "--output"])
def test_an_invalid_uri_is_a_usage_error_before_anything_runs(tmp_path, flag):
    uris = {"--input": str(tmp_path / "in"), "--output": str(tmp_path / "out")} | {flag: "s3://../../etc/passwd"}
    result = _run("score", "--input", uris["--input"], "--output", uris["--output"])
    assert result.returncode == 2 and result.stderr.startswith("usage: mediascore score"), result.stderr
    assert f"argument {flag}: invalid URI 's3://../../etc/passwd': bucket name '..' must be 3 to 63" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing was created
