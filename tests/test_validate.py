"""Cut validation, CTC feasibility filter and ``kdasr prepare validate``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from lhotse import CutSet, Features, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.cut import MonoCut
from lhotse.utils import fastcopy

from kdasr.cli.main import cli
from kdasr.data.importers import import_tsv
from kdasr.data.validate import (
    ctc_feasible,
    cut_num_frames,
    filter_ctc_feasible,
    format_report,
    validate_cuts,
    validate_manifest_dir,
)


class UnknownTokenError(ValueError):
    """Same name as the tokenizer's error: the filter must recognise it by name."""


class CharTokenizer:
    """a..z -> 1..26, space -> 27; anything else is unknown."""

    def encode(self, text: str) -> list[int]:
        bad = sorted({ch for ch in text if not (ch == " " or "a" <= ch <= "z")})
        if bad:
            raise UnknownTokenError(f"cannot map characters {bad}")
        return [27 if ch == " " else ord(ch) - ord("a") + 1 for ch in text]


def make_cut(cut_id: str, duration: float, text: Optional[str], sr: int = 16000) -> MonoCut:
    rec = Recording(
        id=cut_id, sources=[AudioSource(type="file", channels=[0], source=f"/nonexistent/{cut_id}.wav")],
        sampling_rate=sr, num_samples=round(duration * sr), duration=duration,
    )
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration, text=text)
    return MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, recording=rec, supervisions=[sup])


# ------------------------------------------------------------------ CTC


@pytest.mark.parametrize(
    "frames, tokens, subsampling, ok",
    [
        (8, [1, 2], 4, True),  # ceil(8/4) = 2 outputs for 2 tokens
        (8, [1, 1], 4, False),  # a repeat needs a blank between: 3 outputs
        (9, [1, 1], 4, True),  # ceil(9/4) = 3
        (5, [1, 2], 4, True),
        (4, [1, 2], 4, False),
        (0, [], 4, True),
        (0, [1], 4, False),
        (5, [3, 3, 3], 1, True),  # 3 tokens + 2 repeats
        (4, [3, 3, 3], 1, False),
        (100, list(range(25)), 4, True),  # ceil(100/4) = 25
        (100, list(range(26)), 4, False),  # too long
    ],
)
def test_ctc_feasible(frames: int, tokens: list[int], subsampling: int, ok: bool) -> None:
    assert ctc_feasible(frames, tokens, subsampling) is ok


def test_filter_ctc_feasible_reports_every_drop(caplog: pytest.LogCaptureFixture) -> None:
    cuts = CutSet.from_cuts(
        [
            make_cut("fits", 0.08, "ab"),  # 8 frames -> 2 outputs
            make_cut("repeat_short", 0.08, "aa"),  # needs 3 outputs
            make_cut("repeat_ok", 0.09, "aa"),
            make_cut("empty", 0.5, "   "),
            make_cut("unmappable", 0.5, "a1"),
            make_cut("too_long", 0.1, "abcdefghij"),
        ]
    )
    kept, report = filter_ctc_feasible(cuts, CharTokenizer())
    assert sorted(c.id for c in kept) == ["fits", "repeat_ok"]
    assert report["total"] == 6 and report["kept"] == 2
    assert report["ids"] == {
        "ctc_infeasible": ["repeat_short", "too_long"],
        "empty_text": ["empty"],
        "unmappable_text": ["unmappable"],
    }
    assert report["counts"] == {"ctc_infeasible": 2, "empty_text": 1, "unmappable_text": 1}
    assert "['1']" in report["details"]["unmappable_text"]["unmappable"]
    assert "8 frames -> 2 outputs < 2 tokens + 1 repeats" in report["details"]["ctc_infeasible"]["repeat_short"]
    assert "dropped 4 of 6 cuts" in caplog.text


def test_filter_uses_feature_frames_and_reraises_other_errors() -> None:
    cut = make_cut("feat", 1.0, "abcdefghijklmn")  # 14 tokens
    assert cut_num_frames(cut) == 100  # from duration at 10 ms: 25 outputs, fits
    feats = Features(
        type="kaldi-fbank", num_frames=50, num_features=80, frame_shift=0.02, sampling_rate=16000,
        start=0.0, duration=1.0, storage_type="lilcom_chunky", storage_path="/nonexistent", storage_key="0",
    )
    with_feats = fastcopy(cut, features=feats)
    assert cut_num_frames(with_feats) == 50  # stored features win: 13 outputs, too few
    assert len(filter_ctc_feasible([cut], CharTokenizer())[0]) == 1
    kept, report = filter_ctc_feasible([with_feats], CharTokenizer())
    assert len(kept) == 0 and report["ids"] == {"ctc_infeasible": ["feat"]}

    class Broken:
        def encode(self, text: str) -> list[int]:
            raise KeyError("a bug, not bad data")

    with pytest.raises(KeyError):
        filter_ctc_feasible([cut], Broken())


# ------------------------------------------------------------------ validate_cuts


def test_validate_cuts_contract() -> None:
    good = make_cut("good", 1.0, "fine")
    two = make_cut("two", 1.0, "a")
    two = fastcopy(two, supervisions=two.supervisions + [fastcopy(two.supervisions[0], id="two-b")])
    short = make_cut("short", 1.0, "a")
    short = fastcopy(short, supervisions=[fastcopy(short.supervisions[0], duration=0.5)])
    broken = make_cut("broken", 1.0, "a")
    broken = fastcopy(broken, recording=fastcopy(broken.recording, num_samples=100))
    report = validate_cuts([good, two, short, make_cut("empty", 1.0, ""), good, broken])
    assert report["total"] == 6
    assert report["ids"]["not_one_supervision"] == ["two"]
    assert report["ids"]["supervision_not_covering_cut"] == ["short"]
    assert report["ids"]["empty_text"] == ["empty"]
    assert report["ids"]["duplicate_id"] == ["good"]
    assert report["ids"]["lhotse_validation"] == ["broken"]
    text = format_report(report, max_ids=1, title="part x")
    assert text.startswith("part x: 6 checked, 5 problem(s)")
    assert "  empty_text: 1\n    empty" in text
    assert validate_cuts([good])["counts"] == {}


def test_format_report_truncates() -> None:
    cuts = [make_cut(f"e{i}", 1.0, "") for i in range(7)]
    text = format_report(validate_cuts(cuts), max_ids=3)
    assert "e0" in text and "e2" in text and "e3" not in text and "... and 4 more" in text


# ------------------------------------------------------------------ manifest dir and CLI


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    sr = 16000
    for name, seconds in (("a1", 1.0), ("a2", 0.05)):
        t = np.arange(int(seconds * sr)) / sr
        sf.write(d / f"{name}.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), sr)
    (d / "list.tsv").write_text("a1.wav\thello world\na2.wav\ta much too long text for five frames\n")
    out = tmp_path / "manifests"
    import_tsv(d / "list.tsv", out, "train")
    return out


def test_validate_manifest_dir(manifest_dir: Path) -> None:
    reports = validate_manifest_dir(manifest_dir)
    assert list(reports) == ["train"] and reports["train"]["counts"] == {}
    reports = validate_manifest_dir(manifest_dir, ["train"], tokenizer=CharTokenizer())
    assert reports["train"]["ids"] == {"ctc_infeasible": ["a2"]}


def test_validate_read_data_names_non_finite_audio(tmp_path: Path) -> None:
    """Audio with NaN samples (a manifest written by hand or another tool) is named by cut."""
    x = np.zeros(1600, dtype=np.float32)
    x[10] = np.nan
    sf.write(tmp_path / "n.wav", x, 16000, subtype="FLOAT")
    rec = Recording.from_file(tmp_path / "n.wav", recording_id="n")
    sup = SupervisionSegment(id="n", recording_id="n", start=0, duration=rec.duration, text="a")
    out = tmp_path / "m"
    out.mkdir()
    CutSet.from_cuts([MonoCut(id="n", start=0, duration=rec.duration, channel=0, recording=rec,
                              supervisions=[sup])]).to_file(out / "cuts_x.jsonl.gz")
    assert validate_manifest_dir(out)["x"]["counts"] == {}  # not read: cannot tell
    report = validate_manifest_dir(out, read_data=True)["x"]
    assert report["ids"] == {"non_finite_audio": ["n"]}
    res = CliRunner().invoke(cli, ["prepare", "validate", "--manifest-dir", str(out), "--read-data"])
    assert res.exit_code == 1 and "non_finite_audio: 1" in res.output and "    n  (1 NaN/Inf" in res.output


def test_cli_validate(manifest_dir: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["prepare", "validate", "--manifest-dir", str(manifest_dir), "--parts", "train"])
    assert res.exit_code == 0, res.output
    assert "valid" in res.output
    assert (manifest_dir / "log" / "validate.log").is_file()
    bad = CutSet.from_cuts([make_cut("x1", 1.0, ""), make_cut("x2", 1.0, "ok")])
    bad.to_file(manifest_dir / "cuts_dev.jsonl.gz")
    res = runner.invoke(cli, ["prepare", "validate", "--manifest-dir", str(manifest_dir)])
    assert res.exit_code == 1
    assert "part dev: 2 checked, 1 problem(s)" in res.output and "empty_text: 1" in res.output and "x1" in res.output
    res = runner.invoke(cli, ["prepare", "validate", "--manifest-dir", str(manifest_dir), "--parts", "nope"])
    assert res.exit_code == 1 and "cuts_nope.jsonl.gz does not exist" in res.output
