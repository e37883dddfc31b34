"""API keys: constant-time comparison against every key, and a key file read again when it changes."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from serve.keys import KeyRing, parse_keys


def test_keys_from_the_config_and_the_environment():
    ring = KeyRing(["a-key"], env_value=" b-key , ,c-key")
    assert ring.required
    assert all(ring.accepts(k) for k in ("a-key", "b-key", "c-key"))
    assert not any(ring.accepts(k) for k in (None, "", "a-ke", "a-key ", "A-KEY", "b-key,c-key"))


def test_no_keys_means_open_and_a_key_file_means_closed_even_when_empty(tmp_path):
    assert KeyRing([]).accepts(None)
    ring = KeyRing([], path=str(tmp_path / "missing"), check_every_s=0)
    assert ring.required and not ring.accepts(None) and not ring.accepts("")


def test_parse_keys_skips_comments_and_blank_lines():
    assert parse_keys("k1\n\n  k2  # rotated on Monday\n# old-key\n") == (b"k1", b"k2")


def test_the_key_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "keys"
    path.write_text("first\n")
    ring = KeyRing(["fixed"], path=str(path), check_every_s=0)
    assert ring.accepts("first") and ring.accepts("fixed")
    path.write_text("second\n")
    os.utime(path, ns=(0, 10**18))  # a new modification time even on a coarse clock
    assert ring.accepts("second") and not ring.accepts("first") and ring.accepts("fixed")
    path.unlink()
    assert not ring.accepts("second") and ring.accepts("fixed")


def test_the_file_is_looked_at_no_more_often_than_asked(tmp_path):
    path = tmp_path / "keys"
    path.write_text("first\n")
    ring = KeyRing([], path=str(path), check_every_s=3600)
    assert ring.accepts("first")
    path.write_text("second\n")
    assert ring.accepts("first") and not ring.accepts("second")  # the next look is an hour away


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.text(max_size=40))
def test_any_header_value_is_answered_and_only_an_exact_key_opens(presented):
    ring = KeyRing(["s3cr3t-key", "ключ-2"])
    assert ring.accepts(presented) == (presented in ("s3cr3t-key", "ключ-2"))
