"""Logging to stderr and, when a stage has an output directory, to a log file there."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


def setup_logging(verbose: int = 0, log_file: Optional[Path] = None) -> None:
    """Configure the root logger once per process; add ``log_file`` if given.

    Calling it again with another ``log_file`` adds that file too, so a
    subcommand can attach its own log next to its outputs after the CLI group
    has set up stderr logging.
    """
    level = logging.DEBUG if verbose > 0 else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    fmt = logging.Formatter(FORMAT)
    if not any(getattr(h, "_kdasr_stderr", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h._kdasr_stderr = True  # type: ignore[attr-defined]
        h.setFormatter(fmt)
        root.addHandler(h)
    for h in root.handlers:
        if getattr(h, "_kdasr_stderr", False):
            h.setLevel(level)
    if log_file is not None:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        target = str(log_file.resolve())
        if not any(getattr(h, "baseFilename", None) == target for h in root.handlers):
            fh = logging.FileHandler(log_file)
            fh.setFormatter(fmt)
            fh.setLevel(logging.DEBUG)
            root.addHandler(fh)
    for noisy in ("matplotlib", "PIL", "h5py", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_to_files(level: int, msg: str) -> None:
    """Record ``msg`` in the attached log files only: for what the CLI already prints on stderr."""
    record = logging.LogRecord("kdasr", level, "kdasr", 0, msg, None, None)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and record.levelno >= h.level:
            h.handle(record)
