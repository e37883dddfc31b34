import pyarrow.fs as pafs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.common import storage


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


def test_every_legal_key_is_parsed_literally(tricky_keys):
    for key in tricky_keys:
        uri = f"s3://my.bucket-1/{key}"
        location = storage.parse_s3(uri, object_key=True)
        assert (location.bucket, location.key) == ("my.bucket-1", key) and location.uri == uri
        assert storage.split_s3(uri) == ("my.bucket-1", key)
    assert storage.parse_s3("s3://bkt").key == storage.parse_s3("s3://bkt/").key == ""
    assert storage.parse_s3("s3://bkt/" + "é" * 512).key == "é" * 512  # 1024 bytes: the limit itself


INVALID_URIS = {
    "s3://../../etc/passwd": "bucket name '..' must be 3 to 63 characters long",
    "s3:///nobucket": "bucket name '' must be 3 to 63",
    "s3://ab/k.png": "3 to 63",
    "s3://" + "a" * 64 + "/k.png": "3 to 63",
    "s3://Media/k.png": "lowercase letters, digits, dots and hyphens",
    "s3://me_dia/k.png": "lowercase letters, digits, dots and hyphens",
    "s3://-media/k.png": "begin and end with a letter or a digit",
    "s3://media./k.png": "begin and end with a letter or a digit",
    "s3://me..dia/k.png": "two adjacent dots",
    "s3://192.168.1.1/k.png": "IP address",
    "s3://media/" + "é" * 513: "1026 bytes long in UTF-8",
    "s3://media/\ud800.png": "not valid UTF-8",
    "gs://media/k.png": "unsupported scheme 'gs://'",
    "": "empty",
    "/tmp/a\0b.png": "NUL",
}


@pytest.fixture
def no_store(monkeypatch):
    """Any attempt to make an S3 client or filesystem fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a store was asked")

    monkeypatch.setattr(storage, "_s3_filesystem", refuse)
    monkeypatch.setattr(storage, "_boto3_client", refuse)


@pytest.mark.parametrize(("uri", "reason"), INVALID_URIS.items())
def test_an_invalid_uri_is_refused_with_its_reason_before_any_request(no_store, uri, reason):
    calls = {
        "check_uri": lambda: storage.check_uri(uri),
        "resolve": lambda: storage.resolve(uri),
        "read_bytes": lambda: storage.read_bytes(uri),
        "write_bytes": lambda: storage.write_bytes(uri, b"x"),
        "exists": lambda: storage.exists(uri),
        "delete": lambda: storage.delete(uri),
        "list_objects": lambda: list(storage.list_objects(uri)),
        "ensure_bucket": lambda: storage.ensure_bucket(uri),
    }
    for name, call in calls.items():
        with pytest.raises(storage.InvalidURI) as info:
            call()
        assert reason in str(info.value) and info.value.uri == uri, name
        assert str(info.value).startswith(f"invalid URI {uri!r}: "), name


@pytest.mark.parametrize("uri", ["s3://media", "s3://media/"])
def test_a_bucket_is_a_prefix_but_not_an_object(no_store, uri):
    assert storage.check_uri(uri) == uri
    for call in (storage.read_bytes, storage.delete, lambda u: storage.write_bytes(u, b"x")):
        with pytest.raises(storage.InvalidURI, match="names a bucket, not an object"):
            call(uri)


def test_every_legal_key_is_written_listed_and_read_exactly(s3, tricky_keys, put_tricky_images):
    from io import BytesIO

    from PIL import Image

    prefix = "s3://test-storage/tricky"
    sizes = put_tricky_images(prefix)
    assert sorted(o.uri for o in storage.list_objects(prefix, page_size=5)) == sorted(sizes)
    for key in tricky_keys:
        storage.write_bytes(f"s3://test-storage/copy/{key}", key.encode())
    held = storage.s3_client().list_objects_v2(Bucket="test-storage", Prefix="copy/")["Contents"]
    assert sorted(o["Key"] for o in held) == sorted(f"copy/{key}" for key in tricky_keys)  # written exactly
    for uri, size in sizes.items():
        assert Image.open(BytesIO(storage.read_bytes(uri))).size == size, uri  # its own object, not a twin
        assert [o.uri for o in storage.list_objects(uri)] == [uri] and storage.exists(uri), uri
    storage.delete(f"{prefix}/img/pct lit.png")
    assert not storage.exists(f"{prefix}/img/pct lit.png") and storage.exists(f"{prefix}/img/pct%20lit.png")


_FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True)
_BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}(\.[a-z0-9-]{1,10})?[a-z0-9]", fullmatch=True).filter(
    lambda name: storage.bucket_problem(name) is None
)


@_FUZZ
@given(st.text(max_size=80))
def test_any_text_is_a_uri_or_an_invalid_uri_with_a_reason(text):
    try:
        assert storage.check_uri(text, object_key=True) == text
    except storage.InvalidURI as exc:
        assert exc.reason and repr(text) in str(exc)


@_FUZZ
@given(_BUCKETS, st.text(min_size=1, max_size=200))
def test_every_valid_bucket_and_key_parse_back_exactly(bucket, key):
    location = storage.parse_s3(f"s3://{bucket}/{key}", object_key=True)
    assert (location.bucket, location.key) == (bucket, key)
