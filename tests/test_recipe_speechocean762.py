"""egs/speechocean762 on a mock corpus laid out like jimbozhang/speechocean762 (WAVE/SPEAKERxxxx/*.WAV,
official train/ and test/ Kaldi lists with paths from the corpus root), stages 0-3: import with 10
training speakers held out as dev, speed copies, 8 kHz view, fbank, tokens."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from lhotse import load_manifest

from recipe_tools import REPO, check_stages_0_to_3, recipe_copy, run_recipe, sentence, write_tone

TRAIN_SPEAKERS = [f"{i:04d}" for i in (1, 5, 6, 8, 11, 12, 13, 16, 19, 21, 22, 25)]
TEST_SPEAKERS = ["0003", "0007"]


def speechocean762_tree(root: Path) -> Path:
    """<root>/WAVE/SPEAKER<spk>/<utt>.WAV and <root>/{train,test}/{wav.scp,text,utt2spk,spk2utt} (tab-separated)."""
    rng = np.random.default_rng(7)
    seed = 0
    for part, speakers in (("train", TRAIN_SPEAKERS), ("test", TEST_SPEAKERS)):
        wav, text, utt2spk, spk2utt = [], [], [], []
        for spk in speakers:
            utts = []
            for k in range(2):
                utt = f"0{spk}{k:04d}"
                seed += 1
                write_tone(root / "WAVE" / f"SPEAKER{spk}" / f"{utt}.WAV", 0.8 + 0.2 * k, seed, fmt="WAV")
                wav.append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}.WAV\n")
                text.append(f"{utt}\t{sentence(rng)}\n")
                utt2spk.append(f"{utt} {spk}\n")
                utts.append(utt)
            spk2utt.append(f"{spk} {' '.join(utts)}\n")
        d = root / part
        d.mkdir(parents=True)
        for name, lines in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk), ("spk2utt", spk2utt)):
            (d / name).write_text("".join(lines))
    return root


def test_help_and_gpu_switch() -> None:
    res = subprocess.run(["bash", str(REPO / "egs" / "speechocean762" / "run.sh"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    values = dict((line.split(None, 1) + [""])[:2] for line in res.stdout.splitlines() if line.startswith("  --"))
    assert values["--dev-speakers"].strip() == "10"
    assert values["--speed-perturb"].strip() == "0.9 1.0 1.1"
    assert values["--experiments"].strip() == "conf/experiments.txt"
    res = subprocess.run(["bash", str(REPO / "egs" / "speechocean762" / "run.sh"), "--use-gpu", "true", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert dict((line.split(None, 1) + [""])[:2] for line in res.stdout.splitlines()
                if line.startswith("  --"))["--experiments"].strip() == "conf/gpu/experiments.txt"


@pytest.mark.slow
def test_speechocean762_recipe_stages_0_to_3(tmp_path: Path) -> None:
    corpus = speechocean762_tree(tmp_path / "speechocean762")
    recipe = recipe_copy(tmp_path, "speechocean762")
    run_recipe(recipe, "--corpus-dir", str(corpus), "--stop-stage", "3", "--nj", "1")
    data = recipe / "data"
    cuts = check_stages_0_to_3(data, ["train", "dev", "test"], "char")
    train, dev, test = (cuts[(p, "wb")] for p in ("train", "dev", "test"))
    train_spk = {c.supervisions[0].speaker for c in train}
    dev_spk = {c.supervisions[0].speaker for c in dev}
    assert len(dev_spk) == 10 and not dev_spk & train_spk and train_spk | dev_spk == set(TRAIN_SPEAKERS)
    assert {c.supervisions[0].speaker for c in test} == set(TEST_SPEAKERS)
    # Training cuts come in three speeds with their own ids and frames; dev and test are untouched.
    by_id = {c.id: c for c in train}
    originals = [i for i in by_id if "_sp" not in i]
    assert len(by_id) == 3 * len(originals) == 3 * 2 * 2
    for i in originals:
        assert by_id[f"{i}_sp0.9"].num_frames > by_id[i].num_frames > by_id[f"{i}_sp1.1"].num_frames
        assert by_id[f"{i}_sp0.9"].supervisions[0].text == by_id[i].supervisions[0].text
    assert not any("_sp" in c.id for c in dev + test)
    assert len(load_manifest(data / "manifests" / "cuts_dev.jsonl.gz")) == 20
    # A rerun keeps the manifests as they are (no copies of copies).
    run_recipe(recipe, "--corpus-dir", str(corpus), "--stop-stage", "0")
    assert sorted(c.id for c in load_manifest(data / "manifests" / "cuts_train.jsonl.gz")) == sorted(by_id)


def test_kaldi_import_holds_out_dev_speakers(tmp_path: Path, monkeypatch) -> None:
    from kdasr.data.importers import import_kaldi_dir

    corpus = speechocean762_tree(tmp_path / "so")
    monkeypatch.chdir(corpus)  # wav.scp paths start at the corpus root
    out = tmp_path / "manifests"
    import_kaldi_dir(corpus / "train", out, "train", dev_speakers=3, dev_part="dev", seed=1)
    parts = {p: load_manifest(out / f"cuts_{p}.jsonl.gz") for p in ("train", "dev")}
    spk = {p: {c.supervisions[0].speaker for c in cs} for p, cs in parts.items()}
    assert len(spk["dev"]) == 3 and spk["train"] | spk["dev"] == set(TRAIN_SPEAKERS) and not spk["train"] & spk["dev"]
    dev_recs = {r.id for r in load_manifest(out / "recordings_dev.jsonl.gz")}
    assert dev_recs == {c.id for c in parts["dev"]}
    # the same seed picks the same speakers
    import_kaldi_dir(corpus / "train", tmp_path / "again", "train", dev_speakers=3, seed=1)
    assert {c.supervisions[0].speaker for c in load_manifest(tmp_path / "again" / "cuts_dev.jsonl.gz")} == spk["dev"]
    with pytest.raises(ValueError, match="cannot hold out 12 of the 12 training speakers"):
        import_kaldi_dir(corpus / "train", tmp_path / "x", "train", dev_speakers=12)
