"""Argument types shared by the ``mediascore`` subcommands."""

from __future__ import annotations

import argparse


def uri_argument(text: str) -> str:
    """An argparse ``type`` for a URI flag: one that cannot name a location is a usage error (exit 2), before
    anything touches a store.

    Args:
        text: the flag's value.

    Returns:
        ``text``, unchanged.

    Raises:
        argparse.ArgumentTypeError: what is wrong with the URI.
    """
    from jobs.common.storage import InvalidURI, check_uri

    try:
        return check_uri(text)
    except InvalidURI as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
