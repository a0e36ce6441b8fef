"""TSV lists (audio path, transcript) -> kdasr manifests."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from lhotse import (
    CutSet,
)

from kdasr.data.errors import DataError
from kdasr.data.importers.common import (
    MALFORMED,
    Item,
    Problems,
    manifests_from_items,
    settle,
    write_parts,
)
from kdasr.utils.io import Pathlike, read_utf8

# ----------------------------------------------------------------- TSV


_TSV_HEADER_PATH = {"path", "audio_path", "audio", "wav"}
_TSV_HEADER_TEXT = {"text", "transcript", "transcription"}


def import_tsv(
    tsv_path: Pathlike,
    out_dir: Pathlike,
    part: str,
    sampling_rate: Optional[int] = None,
    skip_bad: bool = False,
) -> CutSet:
    """Import a list of ``audio_path<TAB>transcript[<TAB>speaker]`` lines.

    Relative audio paths are taken from the TSV's directory; an optional first
    line ``path<TAB>text<TAB>speaker`` is a header. The utterance id is the
    audio file's name without extension, so names must be unique. With
    ``sampling_rate`` every file must have that rate; without it any rate goes.
    """
    tsv_path, out_dir = Path(tsv_path), Path(out_dir)
    if not tsv_path.is_file():
        raise DataError(f"TSV list {tsv_path} does not exist")
    lines = read_utf8(tsv_path).splitlines()
    problems = Problems(part)
    items: list[Item] = []
    first = True
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if first:
            first = False
            head = [f.strip().lower() for f in fields]
            if len(head) > 1 and head[0] in _TSV_HEADER_PATH and head[1] in _TSV_HEADER_TEXT:
                continue
        where = f"{tsv_path}:{n}"
        if len(fields) not in (2, 3) or not fields[0].strip():
            problems.add(where, MALFORMED, f"{where}: expected audio_path<TAB>transcript[<TAB>speaker], got {raw!r}")
            continue
        path = Path(fields[0].strip())
        path = path if path.is_absolute() else tsv_path.parent / path
        speaker = fields[2].strip() if len(fields) == 3 and fields[2].strip() else None
        items.append(Item(id=path.stem, path=path, text=fields[1], where=where, speaker=speaker))
    if not items and not problems:
        raise DataError(f"{tsv_path} lists no audio files")
    recordings, supervisions = manifests_from_items(items, problems, sampling_rate)
    settle([problems], out_dir, skip_bad)
    return write_parts(out_dir, {part: (recordings, supervisions, problems)})[part]


