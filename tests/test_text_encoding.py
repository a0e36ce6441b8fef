"""Text that is not UTF-8 (a Latin-1 transcript, lexicon, Kaldi text) is named by file and line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdasr.data.importers import import_kaldi_dir, import_tsv
from kdasr.data.tokenizer import read_lexicon
from kdasr.errors import KdasrError
from kdasr.score.wer import read_text_file
from kdasr.utils.io import read_utf8

LATIN1 = "a\tfine\nb\tok\nc\tcaf\xe9 cr\xe8me\n".encode("latin-1")  # line 3, column 6 of it


def _wav(path: Path) -> Path:
    sf.write(path, (0.1 * np.sin(np.arange(4000) / 5.0)).astype(np.float32), 16000, subtype="PCM_16")
    return path


def test_read_utf8_names_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_bytes(LATIN1)
    with pytest.raises(KdasrError) as err:
        read_utf8(p)
    assert str(err.value).startswith(f"{p}:3: not UTF-8 text (byte 0xe9 at column 6 of the line)")
    p.write_bytes("ok caf\u00e9\n".encode())
    assert read_utf8(p) == "ok caf\u00e9\n"


def test_every_text_reader_names_the_line(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _wav(tmp_path / f"{name}.wav")
    tsv = tmp_path / "list.tsv"
    tsv.write_bytes(LATIN1.replace(b"a\t", b"a.wav\t").replace(b"b\t", b"b.wav\t").replace(b"c\t", b"c.wav\t"))
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text("".join(f"{n} {tmp_path / n}.wav\n" for n in "abc"))
    (kaldi / "text").write_bytes(LATIN1.replace(b"\t", b" "))
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_bytes(b"A a\nB b\nCAF\xc9 k a f e\n")
    calls = [(lambda: import_tsv(tsv, tmp_path / "m1", "x"), tsv),
             (lambda: import_kaldi_dir(kaldi, tmp_path / "m2", "x"), kaldi / "text"),
             (lambda: read_lexicon(lexicon), lexicon),
             (lambda: read_text_file(kaldi / "text"), kaldi / "text")]
    for call, path in calls:
        with pytest.raises(KdasrError, match=f"^{path}:3: not UTF-8 text"):
            call()


def test_cli_prints_one_line(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    (tmp_path / "list.tsv").write_bytes(b"a.wav\tna\xefve\n")
    res = subprocess.run([sys.executable, "-m", "kdasr", "prepare", "import", "tsv", str(tmp_path / "list.tsv"),
                          "--part", "x", "--out-dir", str(tmp_path / "m")], capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'list.tsv'}:1: not UTF-8 text (byte 0xef at column 9 of the line); "
        "re-encode it, e.g. iconv -f latin1 -t utf-8"]
