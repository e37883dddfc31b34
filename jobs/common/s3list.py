"""Listing a large S3 prefix with several request streams at once.

One ListObjectsV2 stream returns at most 1000 keys per round trip, and boto3 parses each page's XML in Python
under the GIL: on the embedded server a serial boto3 listing keeps its process on a CPU 83-86 % of the time, so
threads around it cannot go faster (``bench/scale.py`` measured 1.08x with 8 of them). pyarrow's S3 filesystem
(the AWS C++ SDK, a declared dependency) walks the prefix's folders with concurrent requests on its IO thread
pool and parses outside the GIL, so :func:`list_parallel` lists through it, with the IO pool raised to
``workers`` threads. The result is the same set of objects as the serial listing, in key (UTF-8 byte) order.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs

from jobs.common.storage import ObjectInfo, head_size, matches, resolve, s3_client, split_s3


def list_parallel(
    uri: str, extensions: frozenset[str] | None = None, min_size: int = 0, max_size: int | None = None, workers: int = 8
) -> list[ObjectInfo]:
    """Every object under the prefix ``uri`` (filtered as :func:`jobs.common.storage.list_objects` filters), in key
    order; a ``uri`` naming one object lists that object. ``workers`` raises pyarrow's IO thread pool (a
    process-wide setting) to at least that many threads."""
    bucket, key = split_s3(uri)
    if key and not key.endswith("/") and (size := head_size(s3_client(), bucket, key)) is not None:
        return [ObjectInfo(uri, size)] if matches(key, size, extensions, min_size, max_size) else []
    if pa.io_thread_count() < workers:
        pa.set_io_thread_count(workers)
    fs, path = resolve(uri)
    selector = pafs.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True)
    files = [(info.path, info.size) for info in fs.get_file_info(selector) if info.type == pafs.FileType.File]
    files.sort(key=lambda item: item[0].encode())
    return [
        ObjectInfo(f"s3://{p}", int(size))
        for p, size in files
        if matches(p.split("/", 1)[1], int(size), extensions, min_size, max_size)
    ]
