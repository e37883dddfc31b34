"""Listing a large S3 prefix with several request streams at once, fanned out by the prefix's own folders.

One ListObjectsV2 stream returns at most 1000 keys per round trip, so a serial listing of a bucket of millions of
keys is bounded by latency, not bandwidth. S3 has no "split this range" call, but its delimiter listing names the
next level of a prefix (``2026/01/``, ``2026/02/``, ...), which cuts the key space into ranges that do not
overlap. :func:`list_parallel` walks down the levels, each level's folders listed in parallel with the delimiter,
until there are enough folders to keep ``workers`` streams busy (or ``max_depth`` levels), then lists every folder
recursively in parallel. A flat prefix with no folders gets one stream, as before; the result is the same set of
objects as the serial listing, in key (UTF-8 byte) order.

Our own code rather than a library: boto3 has no parallel lister, and s3fs/fsspec's ``find`` lists serially.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from jobs.common.storage import ObjectInfo, head_size, matches, s3_client, split_s3


def _page_all(client, bucket: str, prefix: str, delimiter: str | None, page_size: int):
    kwargs = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": page_size}}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    objects, folders = [], []
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        objects += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return objects, folders


def list_parallel(
    uri: str,
    extensions: frozenset[str] | None = None,
    min_size: int = 0,
    max_size: int | None = None,
    page_size: int = 1000,
    workers: int = 8,
    max_depth: int = 3,
) -> list[ObjectInfo]:
    """Every object under the prefix ``uri`` (filtered as :func:`jobs.common.storage.list_objects` filters), in key
    order, listed with up to ``workers`` request streams; see the module docstring. A ``uri`` naming one object
    lists that object."""
    bucket, key = split_s3(uri)
    client = s3_client()  # boto3 clients are thread-safe; one connection pool for every stream
    if key and not key.endswith("/") and (size := head_size(client, bucket, key)) is not None:
        return [ObjectInfo(uri, size)] if matches(key, size, extensions, min_size, max_size) else []
    prefix = f"{key.rstrip('/')}/" if key else ""
    found: list[tuple[str, int]] = []
    frontier = [prefix]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in range(max_depth):
            if len(frontier) >= workers or not frontier:
                break
            next_level = []
            for objects, folders in pool.map(lambda p: _page_all(client, bucket, p, "/", page_size), frontier):
                found += objects
                next_level += folders
            frontier = next_level
        for objects, _ in pool.map(lambda p: _page_all(client, bucket, p, None, page_size), frontier):
            found += objects
    found.sort(key=lambda item: item[0].encode())
    return [
        ObjectInfo(f"s3://{bucket}/{k}", size)
        for k, size in found
        if not k.endswith("/") and matches(k, size, extensions, min_size, max_size)
    ]
