"""Transient store errors: which errors are the infrastructure's, and the back-off that retries them."""

import pytest

from jobs.common import storage, transient


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject")


def test_transient_errors_are_told_from_errors_of_the_object():
    from botocore.exceptions import EndpointConnectionError

    infrastructure = [
        OSError("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect to server"),
        OSError("When reading information for key 'a.jpg': AWS Error SLOW_DOWN during GetObject: Please reduce rate"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        _client_error("SlowDown", 503),
        _client_error("InternalError", 500),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ]
    of_the_object = [
        FileNotFoundError("s3://b/missing.jpg"),
        PermissionError("access denied"),
        _client_error("NoSuchKey", 404),
        _client_error("AccessDenied", 403),
        OSError("Path does not exist 'b/x'"),
        ValueError("not an image"),
        storage.InvalidURI("s3://", "no bucket"),
    ]
    assert [transient.is_transient(e) for e in infrastructure] == [True] * len(infrastructure)
    assert [transient.is_transient(e) for e in of_the_object] == [False] * len(of_the_object)


def test_retrying_backs_off_until_the_call_succeeds_or_the_budget_is_spent():
    now, waits = [0.0], []

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    def flaky(failures):
        calls = []

        def call():
            calls.append(1)
            if len(calls) <= failures:
                raise ConnectionRefusedError("connection refused")
            return "ok"

        return call, calls

    policy = transient.RetryPolicy(budget_s=10.0, initial_s=0.5, max_s=2.0)
    call, calls = flaky(3)
    assert transient.retrying(call, policy, "read x", sleep=sleep, clock=lambda: now[0]) == "ok" and len(calls) == 4
    assert len(waits) == 3 and all(0 <= w <= 2.0 for w in waits)
    call, calls = flaky(10_000)
    with pytest.raises(transient.TransientError, match=r"read x: store unavailable for 1\d s \(\d+ tries\)"):
        transient.retrying(call, policy, "read x", sleep=sleep, clock=lambda: now[0] + 0.0)
    call = lambda: (_ for _ in ()).throw(FileNotFoundError("gone"))  # noqa: E731
    with pytest.raises(FileNotFoundError):
        transient.retrying(call, policy, "read x", sleep=lambda s: pytest.fail("no retry for a missing object"))


def test_the_retrying_reader_keeps_its_place_across_failed_reads(tmp_path):
    """A real local file handle that fails its first two ranged reads the way a restarting store does."""
    import io

    import pyarrow.fs as pafs

    path = tmp_path / "video.bin"
    data = bytes(range(256)) * 40
    path.write_bytes(data)
    handle = pafs.LocalFileSystem().open_input_file(str(path))
    failures = iter([ConnectionResetError("connection reset by peer")] * 2)
    real_read_at = handle.read_at

    class Flaky:
        def size(self):
            return handle.size()

        def read_at(self, n, position):
            if (error := next(failures, None)) is not None:
                raise error
            return real_read_at(n, position)

        def close(self):
            handle.close()

    reader = transient.RetryingReader(Flaky(), transient.RetryPolicy(budget_s=10, initial_s=0.01), "read video.bin")
    assert reader.read(100) == data[:100] and reader.tell() == 100
    reader.seek(-50, io.SEEK_END)
    assert reader.read() == data[-50:] and reader.read(10) == b""
    reader.seek(10)
    reader.seek(5, io.SEEK_CUR)
    assert reader.read(5) == data[15:20]
    reader.close()
