"""The base class of errors a user causes and can fix (bad input, config, a busy or full disk).

The CLI prints these as one line naming the file, key or item (a traceback
only with ``kdasr -v``); anything else is a bug and keeps its traceback.
It imports nothing, so every layer can raise it.
"""
from __future__ import annotations


class KdasrError(Exception):
    """A problem with the user's input or environment; the message names what to fix."""
