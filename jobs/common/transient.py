"""Transient store errors: telling them from errors of the object, and retrying them with back-off. Ray-free."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

from jobs.common.storage import InvalidURI

# Words of the errors the store's infrastructure raises (pyarrow's AWS SDK messages, botocore's, the OS's), as
# opposed to errors of the object itself (not found, access denied, a bad key). Matched case-insensitively.
_TRANSIENT_WORDS = (
    "network_connection", "could not connect", "connection refused", "connection reset", "connection aborted",
    "broken pipe", "timed out", "timeout", "temporarily unavailable", "service unavailable", "serviceunavailable",
    "service_unavailable", "slow down", "slowdown", "slow_down", "throttl", "too many requests", "internalerror",
    "internal error", "internal_failure", "request_timeout", "remote end closed", "unexpected eof", "curl error",
)  # fmt: skip
_TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "Throttling",
                    "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed"}  # fmt: skip


_HTTP_5XX = re.compile(r"http (?:status|response code)[: ]*5\d\d")


class TransientError(OSError):
    """A store error that outlived its retry budget: the input is left for the next run, not dead-lettered."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an error of the infrastructure (connection refused or reset, timeouts, 5xx, throttling)
    that a retry may cure, rather than an error of the object (not found, empty, forbidden, undecodable)."""
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, FileNotFoundError | PermissionError | InvalidURI):
        return False
    response = getattr(exc, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        error = response.get("Error", {})
        status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return error.get("Code") in _TRANSIENT_CODES or status.startswith("5")
    if type(exc).__module__.startswith(("botocore", "urllib3")):
        return any(word in type(exc).__name__.lower() for word in ("connect", "timeout", "endpoint", "protocol"))
    if isinstance(exc, OSError):
        text = str(exc).lower()
        return any(word in text for word in _TRANSIENT_WORDS) or bool(_HTTP_5XX.search(text))
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient store errors: exponential back-off with full jitter, from ``initial_s`` doubling up to
    ``max_s`` per wait, for at most ``budget_s`` in all (0: no retries)."""

    budget_s: float = 60.0
    initial_s: float = 0.2
    max_s: float = 5.0


def retrying(call, policy: RetryPolicy, what: str, sleep=None, clock=None):
    """``call()``, retried under ``policy`` while it raises a transient error (:func:`is_transient`); any other
    error passes through at once.

    Raises:
        TransientError: the budget ran out; the message says how long, how often and the last error.
    """
    sleep, clock = sleep or time.sleep, clock or time.monotonic
    started, attempt = clock(), 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            spent = clock() - started
            if spent >= policy.budget_s:
                last = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                raise TransientError(f"{what}: store unavailable for {spent:.0f} s ({attempt} tries); {last}") from exc
            wait = random.uniform(0, min(policy.max_s, policy.initial_s * 2 ** (attempt - 1)))
            sleep(min(wait, max(0.0, policy.budget_s - spent)))


class RetryingReader:
    """A seekable, read-only file object over a random-access store handle (pyarrow's ``open_input_file``) whose
    every read is a ranged read retried under ``policy``: a large video decoded straight from S3 rides out a
    restart of the store in the middle of a frame. It keeps its own position, so a failed read never leaves the
    handle half-advanced. Reads that outlive the budget raise :class:`TransientError`."""

    def __init__(self, handle, policy: RetryPolicy, what: str):
        self.handle, self.policy, self.what = handle, policy, what
        self.size = handle.size()
        self.position = 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.position if n is None or n < 0 else min(n, self.size - self.position)
        if n <= 0:
            return b""
        data = retrying(lambda: self.handle.read_at(n, self.position), self.policy, self.what)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = max(0, offset + (0, self.position, self.size)[whence])
        return self.position

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.handle.close()
