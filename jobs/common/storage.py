"""One place that turns a URI into a filesystem.

``s3://bucket/key`` goes to S3 (any S3-compatible server), anything else is a local path (``file://`` allowed).
An ``s3://`` URI is split by :func:`parse_s3` and by nothing else: the key is every character after the bucket's
``/``, taken literally (``#``, ``?``, ``%20``, ``+`` are part of the key, never a fragment, a query or an escape).
A URI that cannot name a location (a bad bucket name, an empty or over-long key, an unknown scheme) raises
:class:`InvalidURI` before any request is made.
Endpoint, credentials and region come from the standard AWS environment variables, read when a filesystem is
first asked for in a process:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (unset: AWS itself),
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (default ``us-east-1``),
- ``AWS_MAX_ATTEMPTS`` (default 5): the retry policy, the AWS "standard" strategy (exponential back-off with
  jitter on throttling, 5xx and connection errors) in both pyarrow and boto3.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from jobs.common import storage

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
MAX_KEY_BYTES = 1024
_BUCKET_CHARS = re.compile(r"[a-z0-9.-]+")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class InvalidURI(ValueError):
    """A URI that cannot name a location in a store. Raised before any request; the message says why."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"invalid URI {uri!r}: {reason}")
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True)
class S3Location:
    """A parsed ``s3://`` URI: the bucket and the exact key (``""`` for a whole bucket)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The URI again, character for character."""
        return f"{S3_SCHEME}{self.bucket}/{self.key}"


@dataclass(frozen=True)
class S3Settings:
    """Connection settings for S3, read from the environment."""

    endpoint_url: str | None
    access_key: str | None
    secret_key: str | None
    session_token: str | None
    region: str
    max_attempts: int
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> S3Settings:
        env = os.environ
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            max_attempts=int(env.get("AWS_MAX_ATTEMPTS", "5")),
        )


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its full URI and size in bytes."""

    uri: str
    size: int


def is_s3(uri: str) -> bool:
    """Whether ``uri`` names an S3 location (``s3://...``)."""
    return uri.startswith(S3_SCHEME)


def bucket_problem(name: str) -> str | None:
    """What makes ``name`` an invalid S3 bucket name, or ``None`` when it is valid.

    Args:
        name: the bucket name.

    Returns:
        The first rule it breaks, in words, or ``None``.
    """
    if not 3 <= len(name) <= 63:
        return f"bucket name {name!r} must be 3 to 63 characters long"
    if not _BUCKET_CHARS.fullmatch(name):
        return f"bucket name {name!r} may hold only lowercase letters, digits, dots and hyphens"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"bucket name {name!r} must begin and end with a letter or a digit"
    if ".." in name:
        return f"bucket name {name!r} must not hold two adjacent dots"
    if _IPV4.fullmatch(name):
        return f"bucket name {name!r} must not be formatted as an IP address"
    return None


def key_problem(key: str, object_key: bool) -> str | None:
    """What makes ``key`` an invalid S3 object key (or prefix), or ``None`` when it is valid.

    Args:
        key: the key, exactly as it is stored.
        object_key: the key must name an object, so it may not be empty.

    Returns:
        The rule it breaks, in words, or ``None``.
    """
    if object_key and not key:
        return "it names a bucket, not an object: the key is empty"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "the key is not valid UTF-8"
    if size > MAX_KEY_BYTES:
        return f"the key is {size} bytes long in UTF-8, more than the {MAX_KEY_BYTES} S3 allows"
    return None


def parse_s3(uri: str, object_key: bool = False) -> S3Location:
    """Split ``s3://bucket/key`` into bucket and key, checked, the key taken literally.

    Args:
        uri: the URI.
        object_key: ``uri`` must name an object (a non-empty key), not a bucket or a prefix.

    Returns:
        The bucket and the key (``""`` for ``s3://bucket`` or ``s3://bucket/``).

    Raises:
        InvalidURI: not an ``s3://`` URI, an invalid bucket name, or an invalid key.
    """
    if not is_s3(uri):
        raise InvalidURI(uri, f"not an {S3_SCHEME} URI")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    problem = bucket_problem(bucket) or key_problem(key, object_key)
    if problem:
        raise InvalidURI(uri, problem)
    return S3Location(bucket, key)


def check_uri(uri: str, object_key: bool = False) -> str:
    """Check that ``uri`` can name a location (S3 or local) without touching any store.

    Args:
        uri: ``s3://bucket/key``, ``file://path`` or a local path.
        object_key: ``uri`` must name one object (for S3: a non-empty key).

    Returns:
        ``uri``, unchanged.

    Raises:
        InvalidURI: what is wrong with it.
    """
    if is_s3(uri):
        parse_s3(uri, object_key)
        return uri
    if not uri:
        raise InvalidURI(uri, "the URI is empty")
    scheme = _SCHEME.match(uri)
    if scheme and not uri.startswith(FILE_SCHEME):
        raise InvalidURI(uri, f"unsupported scheme {scheme.group(0)!r} (use {S3_SCHEME}, {FILE_SCHEME} or a path)")
    if "\0" in uri:
        raise InvalidURI(uri, "a path may not hold a NUL character")
    return uri


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; raises :class:`InvalidURI` (see :func:`parse_s3`)."""
    location = parse_s3(uri)
    return location.bucket, location.key


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with ``/``, whatever its scheme."""
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


@functools.lru_cache(maxsize=8)
def _s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    kwargs: dict = {
        "region": settings.region,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=settings.max_attempts),
        "connect_timeout": settings.connect_timeout_s,
        "request_timeout": settings.request_timeout_s,
    }
    if settings.endpoint_url:
        kwargs["endpoint_override"] = settings.endpoint_url
    if settings.access_key:
        kwargs.update(access_key=settings.access_key, secret_key=settings.secret_key)
        if settings.session_token:
            kwargs["session_token"] = settings.session_token
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str, object_key: bool = False) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow filesystem for ``uri`` and the path inside it.

    Args:
        uri: ``s3://bucket/key``, ``file://path`` or a local path.
        object_key: ``uri`` must name one object (see :func:`check_uri`).

    Raises:
        InvalidURI: before any filesystem is made, when ``uri`` cannot name a location.
    """
    if is_s3(uri):
        location = parse_s3(uri, object_key)
        return _s3_filesystem(S3Settings.from_env()), f"{location.bucket}/{location.key}".rstrip("/")
    check_uri(uri, object_key)
    path = uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri
    return pafs.LocalFileSystem(), os.path.abspath(path)


@functools.lru_cache(maxsize=8)
def _boto3_client(settings: S3Settings):
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.request_timeout_s,
        max_pool_connections=32,
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        aws_session_token=settings.session_token,
        region_name=settings.region,
        config=config,
    )


def s3_client():
    """A boto3 S3 client with the same endpoint, credentials and retry policy as :func:`resolve`."""
    return _boto3_client(S3Settings.from_env())


def matches(name: str, size: int, extensions: frozenset[str] | None, min_size: int, max_size: int | None) -> bool:
    if extensions is not None and os.path.splitext(name)[1].lower() not in extensions:
        return False
    return size >= min_size and (max_size is None or size <= max_size)


def list_objects(
    uri: str,
    extensions: Iterable[str] | None = None,
    min_size: int = 0,
    max_size: int | None = None,
    page_size: int = 1000,
) -> Iterator[ObjectInfo]:
    """Yield the objects under ``uri`` in key order, one page at a time.

    Args:
        uri: a prefix (``s3://bucket/prefix`` or a folder); a single object's URI lists that object.
        extensions: keep names ending in one of these (``.jpg``, case-insensitive); ``None`` keeps all.
        min_size: drop objects smaller than this many bytes.
        max_size: drop objects larger than this many bytes.
        page_size: keys per ListObjectsV2 request on S3.
    """
    exts = (
        None
        if extensions is None
        else frozenset(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    )
    if is_s3(uri):
        yield from _list_s3(uri, exts, min_size, max_size, page_size)
        return
    _, root = resolve(uri)
    if os.path.isfile(root):
        if matches(root, os.path.getsize(root), exts, min_size, max_size):
            yield ObjectInfo(root, os.path.getsize(root))
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            size = os.path.getsize(path)
            if matches(name, size, exts, min_size, max_size):
                yield ObjectInfo(path, size)


def _list_s3(uri: str, exts, min_size: int, max_size: int | None, page_size: int) -> Iterator[ObjectInfo]:
    bucket, key = split_s3(uri)
    client = s3_client()
    head = head_size(client, bucket, key) if key and not key.endswith("/") else None
    if head is not None:
        if matches(key, head, exts, min_size, max_size):
            yield ObjectInfo(uri, head)
        return
    prefix = f"{key.rstrip('/')}/" if key else ""
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/") and matches(obj["Key"], obj["Size"], exts, min_size, max_size):
                yield ObjectInfo(f"s3://{bucket}/{obj['Key']}", int(obj["Size"]))


def head_size(client, bucket: str, key: str) -> int | None:
    from botocore.exceptions import ClientError

    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


class ObjectTooLarge(ValueError):
    """An object longer than the reader's limit; raised after reading only one byte more than the limit."""

    def __init__(self, uri: str, limit: int):
        super().__init__(f"{uri} is larger than the limit of {limit} bytes")
        self.limit = limit


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Read a whole object, or refuse one longer than ``max_bytes`` (:class:`ObjectTooLarge`) without reading more
    than ``max_bytes + 1`` bytes of it. Raises ``FileNotFoundError`` when it does not exist, :class:`InvalidURI`
    (before any request) when ``uri`` cannot name an object."""
    fs, path = resolve(uri, object_key=True)
    with fs.open_input_stream(path) as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ObjectTooLarge(uri, max_bytes)
    return data


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object (on S3 it appears only once complete); creates local folders as needed."""
    fs, path = resolve(uri, object_key=True)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete(uri: str) -> None:
    """Delete one object; a missing one is not an error."""
    fs, path = resolve(uri, object_key=True)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def ensure_bucket(uri: str) -> None:
    """Create the bucket of an s3 URI if it does not exist; a local path gets its folder."""
    if not is_s3(uri):
        os.makedirs(resolve(uri)[1], exist_ok=True)
        return
    from botocore.exceptions import ClientError

    bucket, _ = split_s3(uri)
    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)


def read_json(uri: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(uri))
    except FileNotFoundError:
        return None


def write_json(uri: str, data: dict | list) -> None:
    storage.write_bytes(uri, json.dumps(data, indent=2, sort_keys=True).encode())
