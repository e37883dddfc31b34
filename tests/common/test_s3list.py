"""The parallel lister returns what the serial one returns, in key order, on the real S3 server."""

from __future__ import annotations

import pytest

from jobs.common import storage
from jobs.common.s3list import list_parallel

KEYS = [
    "top.jpg", "a/1.jpg", "a/2.png", "a/deep/x/y/z.jpg", "a/deep/x/w.txt", "b/1.jpg", "b/c/2.jpg", "b c/3.jpg",
    "b/ü/4.jpg", "b-/5.jpg", "c/", "d/e/f/g/h/6.jpg", "zz.JPG",
]  # fmt: skip


@pytest.fixture(scope="module")
def bucket(s3):
    for i, key in enumerate(KEYS):
        storage.write_bytes(f"s3://test-list/root/{key}", b"x" * i) if not key.endswith("/") else None
    storage.write_bytes("s3://test-list/rootless.jpg", b"x")  # shares the prefix's first letters, not its folder
    return "s3://test-list/root"


@pytest.mark.parametrize("workers", [2, 8])
def test_parallel_listing_matches_the_serial_one(bucket, workers):
    serial = list(storage.list_objects(bucket))
    assert len(serial) == len([k for k in KEYS if not k.endswith("/")])
    by_key = sorted(serial, key=lambda o: o.uri.encode())  # the server's own order may walk folders first
    assert list_parallel(bucket, workers=workers) == by_key


def test_filters_and_a_single_object(bucket):
    exts = frozenset({".jpg"})
    serial = list(storage.list_objects(bucket, [".jpg"], min_size=3))
    assert list_parallel(bucket, exts, min_size=3) == sorted(serial, key=lambda o: o.uri.encode())
    one = f"{bucket}/a/2.png"
    assert list_parallel(one) == [storage.ObjectInfo(one, 2)]
    assert list_parallel(f"{bucket}/nothing-here") == []
