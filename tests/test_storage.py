import pyarrow.fs as pafs
import pytest

from jobs import storage


def test_s3_settings_come_from_the_standard_variables(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "9")
    settings = storage.S3Settings.from_env()
    assert settings.endpoint_url == "http://127.0.0.1:2"  # the S3-specific variable wins
    assert (settings.access_key, settings.secret_key, settings.region, settings.max_attempts) == (
        "k",
        "s",
        "eu-west-3",
        9,
    )


def test_resolve_local_and_s3(s3, tmp_path):
    fs, path = storage.resolve(str(tmp_path / "a"))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "a")
    fs, path = storage.resolve("s3://bucket/some/key.jpg")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/some/key.jpg"
    with pytest.raises(ValueError):
        storage.split_s3("s3:///nobucket")


@pytest.mark.parametrize("root", ["s3", "local"])
def test_listing_pages_filters_and_round_trips(s3, tmp_path, root):
    base = "s3://test-storage/listing" if root == "s3" else str(tmp_path / "listing")
    storage.ensure_bucket(base)
    names = {"a.jpg": 10, "b.PNG": 20, "c.txt": 5, "sub/d.mp4": 300, "sub/e.jpg": 1}
    for name, size in names.items():
        storage.write_bytes(storage.join(base, name), b"x" * size)
    everything = list(storage.list_objects(base, page_size=2))  # several pages on S3
    assert [o.uri.rsplit("listing/", 1)[1] for o in everything] == sorted(names)
    assert {o.uri.rsplit("listing/", 1)[1]: o.size for o in everything} == names
    images = list(storage.list_objects(base, extensions=[".jpg", "png"], min_size=2))
    assert sorted(o.uri.rsplit("/", 1)[1] for o in images) == ["a.jpg", "b.PNG"]
    assert [o.size for o in storage.list_objects(base, max_size=5)] == [5, 1]
    single = list(storage.list_objects(storage.join(base, "sub/d.mp4")))
    assert [(o.uri, o.size) for o in single] == [(storage.join(base, "sub/d.mp4"), 300)]
    assert storage.read_bytes(storage.join(base, "a.jpg")) == b"x" * 10
    assert storage.exists(storage.join(base, "a.jpg"))
    storage.delete(storage.join(base, "a.jpg"))
    storage.delete(storage.join(base, "a.jpg"))  # deleting twice is fine
    assert not storage.exists(storage.join(base, "a.jpg"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(base, "missing.jpg"))


def test_multipart_upload_of_a_large_object(s3):
    storage.ensure_bucket("s3://test-storage")
    data = bytes(range(256)) * (40 * 4096)  # 40 MiB: pyarrow switches to multipart
    storage.write_bytes("s3://test-storage/big.bin", data)
    assert storage.read_bytes("s3://test-storage/big.bin") == data
