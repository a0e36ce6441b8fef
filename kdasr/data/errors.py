"""The one exception type for bad input data.

It lives in its own small module (no lhotse import) so the CLI can catch it
and turn it into a clean one-line error without loading the data stack.
"""
from __future__ import annotations

from kdasr.errors import KdasrError


class DataError(KdasrError):
    """Input data that cannot be used as given; the message names the file or utterance."""
