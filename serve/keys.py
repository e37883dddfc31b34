"""API keys of the gateway: from the config, an environment variable, and a file that may change while serving.

Ray-free and HTTP-free, so the rules are tested on their own: a presented key is compared with every accepted key
in constant time (``hmac.compare_digest``, and no early exit across keys), and the file is read again at most once
per ``check_every_s`` when its modification time or size changed, so a rotated key takes effect without a restart.
"""

from __future__ import annotations

import hmac
import logging
import os
import time

log = logging.getLogger(__name__)


def parse_keys(text: str) -> tuple[bytes, ...]:
    """One key per line; blank lines and ``#`` comments are skipped, surrounding white space is not part of a key."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(line.encode() for line in lines if line)


class KeyRing:
    """The keys the gateway accepts.

    Args:
        keys: keys from the config.
        env_value: the comma-separated keys of the environment variable, read once at start.
        path: a key file; when set, a key is always required, so an empty or missing file locks everyone out
            rather than opening the service. A file that cannot be read keeps the keys read before.
        check_every_s: how often the file's modification time is looked at.
    """

    def __init__(self, keys: list[str], env_value: str = "", path: str | None = None, check_every_s: float = 1.0):
        listed = [k.strip() for k in [*keys, *env_value.split(",")] if k.strip()]
        self.fixed = tuple(k.encode() for k in listed)
        self.path = path
        self.check_every_s = check_every_s
        self.from_file: tuple[bytes, ...] = ()
        self._seen: tuple[int, int] | None = None
        self._next_check = 0.0

    @property
    def required(self) -> bool:
        return bool(self.fixed) or self.path is not None

    def current(self) -> tuple[bytes, ...]:
        """The accepted keys now, reading the file again when it changed."""
        if self.path is not None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.check_every_s
            self._reload()
        return self.fixed + self.from_file

    def _reload(self) -> None:
        try:
            stat = os.stat(self.path)
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen != self._seen:
                with open(self.path, encoding="utf-8") as f:
                    self.from_file = parse_keys(f.read())
                self._seen = seen
                log.info("API keys read from %s: %d keys", self.path, len(self.from_file))
        except FileNotFoundError:
            if self._seen is not None:
                log.warning("API key file %s is gone: its keys no longer open the service", self.path)
            self.from_file, self._seen = (), None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("API key file %s unreadable, keeping the keys read before: %s", self.path, exc)

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` (the X-API-Key header) opens the service; every key is compared, none skipped."""
        if not self.required:
            return True
        given = (presented or "").encode()
        matched = False
        for key in self.current():
            matched |= hmac.compare_digest(given, key)
        return matched and bool(given)
