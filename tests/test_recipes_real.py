"""The corpus recipes (egs/aurora4, egs/librispeech, egs/kaldi_data) on small mock corpora laid out
like the real ones, through their run.sh in a subprocess, stages 0-3: import -> 8 kHz view -> fbank
-> tokens. Plus the Aurora-4 condition-group table of the report and the WSJ transcript cleanup.
"""
from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from lhotse import load_manifest

from kdasr.data.importers import normalize_wsj_transcript
from kdasr.score.report import collect, markdown_table
from recipe_tools import REPO, check_stages_0_to_3, ids, recipe_copy, run_recipe, sentence, write_tone
from synth import AURORA_TEST, AURORA_TRAIN

# ------------------------------------------------------------------ --help


@pytest.mark.parametrize("name, expect", [
    ("aurora4", {"corpus": "aurora4", "train-part": "train_multi", "dev-speakers": "4", "nb-source": "simulate"}),
    ("librispeech", {"lhotse-recipe": "librispeech", "bpe-vocab": "500", "test-parts": "test-clean test-other"}),
    ("kaldi_data", {"corpus": "kaldi", "train-part": "train", "kaldi-wav-root": ""}),
])
def test_help(name: str, expect: dict[str, str]) -> None:
    res = subprocess.run(["bash", str(REPO / "egs" / name / "run.sh"), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    values = dict((line.split(None, 1) + [""])[:2] for line in res.stdout.splitlines() if line.startswith("  --"))
    for opt, value in {**expect, "corpus-dir": "", "stop-stage": "100"}.items():
        assert values.get(f"--{opt}", "<missing>").strip() == value, opt


def experiment_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def plan_of(experiments: str, exp_dir: str = "exp") -> list:
    """The plan of egs/<experiments> with the shared configs of recipes/, at seeds 1 and 2."""
    from kdasr.plan import make_plan

    return make_plan(REPO / "egs" / experiments, [1, 2], exp_dir, shared=[REPO / "recipes"],
                     base=REPO / "egs" / experiments.split("/")[0])


@pytest.mark.parametrize("experiments", [
    "aurora4/conf/experiments.txt", "librispeech/conf/experiments.txt",
    "kaldi_data/conf/experiments.txt", "kaldi_data/conf/experiments_wb.txt",
    "kaldi_data/conf/cpu/experiments.txt", "kaldi_data/conf/cpu/experiments_wb.txt",
    "speechocean762/conf/experiments.txt", "speechocean762/conf/gpu/experiments.txt",
])
def test_experiment_configs_build(experiments: str) -> None:
    """Every planned config's model builds, and its kd section reads teachers of the same file."""
    from kdasr.distill.strategies import KD_DEFAULTS
    from kdasr.models import build_model

    steps = plan_of(experiments)
    teachers = {s.name for s in steps if s.role == "teacher"}
    assert teachers and any(s.role == "student" for s in steps) and all(s.stage for s in steps)
    for s in steps:
        model = build_model(s.config["model"], 80 if s.view == "wb" else 40, 500, None)
        assert model.num_params() > 0
        if "kd" in s.config:
            assert s.role == "student" and set(s.config["kd"]) <= set(KD_DEFAULTS), s.name
            assert set(s.deps) == {t["name"] for t in s.config["kd"]["teachers"]} <= teachers, s.name
            for t in s.config["kd"]["teachers"]:  # an archive, or a checkpoint run online on its view's cuts
                if "checkpoint" in t:
                    assert t["checkpoint"] == f"exp/{t['name']}/best.pt" and s.deps[t["name"]] == "trained", s.name
                    assert t["cuts"].endswith("cuts_train_wb.jsonl.gz"), s.name
                else:
                    assert t["archive"] == f"exp/{t['name']}/softlabels", s.name


DEMO_LISTS = sorted(p.name for p in (REPO / "egs" / "demo" / "conf").glob("experiments*.txt"))


def test_demo_experiment_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's lists plan (each run after the ones it reads), and every archive read is written by some list."""
    from kdasr.distill.strategies import KD_DEFAULTS

    monkeypatch.chdir(tmp_path)
    for f in DEMO_LISTS:  # what the other lists train, as a finished run leaves it
        for name, role, view, *_ in experiment_lines(REPO / "egs" / "demo" / "conf" / f):
            (tmp_path / "exp" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "exp" / name / ".done").touch()
            (tmp_path / "exp" / name / "config.yaml").write_text(f"view: {view}\nrole: {role}\n")
    plans = {f: plan_of(f"demo/conf/{f}") for f in DEMO_LISTS}
    archived = {s.name for steps in plans.values() for s in steps if s.archived and s.stage}
    for f, steps in plans.items():
        for s in (s for s in steps if s.stage):
            assert s.config["model"]["name"], s.name
            assert set(s.config.get("kd", {})) <= set(KD_DEFAULTS), s.name
            assert {d for d, kind in s.deps.items() if kind == "archive"} <= archived, (f, s.name)


def test_shared_kd_configs_restate_no_default() -> None:
    from kdasr.config import load_config
    from kdasr.distill.strategies import KD_DEFAULTS

    files = sorted((REPO / "recipes" / "conf" / "kd").glob("*.yaml"))
    assert files and not list(REPO.glob("egs/*/conf/kd/*.yaml"))
    for f in files:
        kd = load_config(f)["kd"]
        # a teacher by name: its archive, or (online) its best.pt on the cuts of its view
        assert kd["teachers"] and all(set(t) in ({"name"}, {"name", "checkpoint", "view"}) for t in kd["teachers"]), f.name
        assert all(kd[k] != KD_DEFAULTS[k] for k in kd if k != "teachers"), f.name


# ------------------------------------------------------------------ Aurora-4


@pytest.mark.slow
def test_aurora4_recipe_stages_0_to_3(aurora4_tree: Path, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path, "aurora4")
    # The mock has 3 training speakers; one is held out as dev.
    run_recipe(recipe, "--corpus-dir", str(aurora4_tree), "--dev-speakers", "1", "--stop-stage", "3", "--nj", "1")
    data = recipe / "data"
    cuts = check_stages_0_to_3(data, ["train_multi", "dev", "test"], "char")
    assert not (data / "manifests" / "cuts_train_clean.jsonl.gz").exists()
    train_spk = {c.supervisions[0].speaker for c in cuts[("train_multi", "wb")]}
    dev_spk = {c.supervisions[0].speaker for c in cuts[("dev", "wb")]}
    assert len(dev_spk) == 1 and not dev_spk & train_spk
    assert train_spk | dev_spk == set(AURORA_TRAIN)
    for view in ("wb", "nb"):
        test = cuts[("test", view)]
        assert len(test) == 14 * len(AURORA_TEST)
        groups = {c.supervisions[0].custom["condition"]: c.supervisions[0].custom["condition_group"] for c in test}
        assert groups == {f"{i:02d}": "A" if i == 1 else "B" if i <= 7 else "C" if i == 8 else "D" for i in range(1, 15)}
    # --normalize-text wsj: the WSJ backslash quoting is gone.
    text = next(c for c in cuts[("train_multi", "wb")] if c.id == "011c0201_multi").supervisions[0].text
    assert text == "THE 011C0201 SENTENCE COMMA HERE"
    # The default nb view is the simulated telephone channel of the 16 kHz audio.
    nb = load_manifest(data / "manifests" / "cuts_test_nb.jsonl.gz")[0]
    assert "narrowband" in nb.recording.sources[0].source


@pytest.mark.slow
def test_aurora4_recipe_own_8k_copy(aurora4_tree: Path, tmp_path: Path) -> None:
    recipe = recipe_copy(tmp_path, "aurora4")
    run_recipe(recipe, "--corpus-dir", str(aurora4_tree), "--dev-speakers", "1", "--dev-seed", "2",
               "--nb-source", "corpus", "--stop-stage", "2", "--nj", "1")
    data = recipe / "data"
    for part in ("train_multi", "dev", "test"):
        assert ids(data / "manifests" / f"cuts_{part}_nb.jsonl.gz") == ids(data / "manifests" / f"cuts_{part}.jsonl.gz")
        wb, nb = (list(load_manifest(data / "fbank" / f"cuts_{part}_{v}.jsonl.gz")) for v in ("wb", "nb"))
        assert {c.id: c.num_frames for c in wb} == {c.id: c.num_frames for c in nb}
        assert all("wav8k" in c.recording.sources[0].source and c.sampling_rate == 8000 for c in nb)
        assert all("wav16k" in c.recording.sources[0].source for c in wb)
    assert not (data / "narrowband" / "test").exists()


def test_wsj_transcript_normalization() -> None:
    raw = r"[loud_breath] The I\. B\. M\. \,COMMA <and> *pertinent* [<door_slam] ~ . %PERCENT --DASH [/phone_ring]"
    assert normalize_wsj_transcript(raw) == "THE I. B. M. ,COMMA AND PERTINENT PERCENT -DASH"
    assert normalize_wsj_transcript("[noise]") == ""


def _decode(exp: Path, cuts: Path, wers: dict[str, float]) -> None:
    d = exp / "decode_test_wb_greedy"
    d.mkdir(parents=True)
    (d / "decode.yaml").write_text(yaml.safe_dump({
        "cuts": str(cuts), "method": "greedy", "model": "vgg", "wer": 10.0, "num_params": 5_000_000,
        "macs_per_second": 1e8, "rtf": 0.01, "per_condition_wer": wers,
    }))


def test_report_groups_aurora4_conditions(tmp_path: Path) -> None:
    cuts = tmp_path / "cuts_test_wb.jsonl.gz"
    with gzip.open(cuts, "wt") as f:
        for i in range(1, 15):
            cond = f"{i:02d}"
            group = "A" if i == 1 else "B" if i <= 7 else "C" if i == 8 else "D"
            f.write(json.dumps({"id": f"u_{cond}", "supervisions": [
                {"id": f"u_{cond}", "custom": {"condition": cond, "condition_group": group}}]}) + "\n")
    wers = {f"{i:02d}": float(i) for i in range(1, 15)}
    _decode(tmp_path / "vgg_seed1", cuts, wers)
    _decode(tmp_path / "vgg_seed2", cuts, {k: w + 2 for k, w in wers.items()})
    rows = collect([tmp_path / "vgg_seed1", tmp_path / "vgg_seed2"])
    table = markdown_table(rows)
    assert "WER by condition group on test_wb (greedy" in table
    assert "| experiment | A (01) | B (02-07) | C (08) | D (09-14) | avg |" in table
    # A: 1, 3 -> 2.00 ± 1.00; B: mean(2..7) = 4.5 and 6.5; C: 8, 10; D: 11.5, 13.5; avg: 7.5, 9.5.
    assert "| vgg | 2.00 ± 1.00 | 5.50 ± 1.00 | 9.00 ± 1.00 | 12.50 ± 1.00 | 8.50 ± 1.00 |" in table
    assert "WER by condition on test_wb (greedy)" in table  # the 14 conditions are still listed
    # Cuts without groups (or gone): no group table.
    cuts.unlink()
    assert "condition group" not in markdown_table(collect([tmp_path / "vgg_seed1"]))


# ------------------------------------------------------------------ LibriSpeech


def librispeech_tree(root: Path) -> Path:
    """LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac + <spk>-<chapter>.trans.txt."""
    rng = np.random.default_rng(0)
    layout = {"train-clean-100": [("19", "198"), ("26", "495")], "dev-clean": [("84", "121123")],
              "test-clean": [("1089", "134686")], "test-other": [("1688", "142285")]}
    seed = 0
    for part, chapters in layout.items():
        for spk, chapter in chapters:
            d = root / "LibriSpeech" / part / spk / chapter
            lines = []
            for i in range(3 if part.startswith("train") else 2):
                utt = f"{spk}-{chapter}-{i:04d}"
                seed += 1
                write_tone(d / f"{utt}.flac", 1.0 + 0.25 * i, seed, fmt="FLAC")
                lines.append(f"{utt} {sentence(rng)}\n")
            (d / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))
    return root / "LibriSpeech"


@pytest.mark.slow
def test_librispeech_recipe_stages_0_to_3(tmp_path: Path) -> None:
    corpus = librispeech_tree(tmp_path / "corpus")
    recipe = recipe_copy(tmp_path, "librispeech")
    # A 500-piece BPE needs more text than a mock has.
    run_recipe(recipe, "--corpus-dir", str(corpus), "--bpe-vocab", "30", "--lhotse-opts", "num_jobs=1",
               "--stop-stage", "3", "--nj", "1")
    data = recipe / "data"
    cuts = check_stages_0_to_3(data, ["train-clean-100", "dev-clean", "test-clean", "test-other"], "bpe")
    assert [c.id for c in cuts[("test-other", "wb")]] == ["1688-142285-0000", "1688-142285-0001"]
    assert (data / "lang_bpe" / "bpe.model").is_file()
    assert len((data / "lang_bpe" / "tokens.txt").read_text().splitlines()) == 30


# ------------------------------------------------------------------ Kaldi data dirs


def kaldi_tree(root: Path) -> Path:
    """s5/data/{train_si284,test_dev93,test_eval92}: relative paths (from s5), segments, a piped entry."""
    s5 = root / "s5"
    rng = np.random.default_rng(1)
    # train: two 3 s recordings cut into segments, paths relative to s5 (Kaldi's convention).
    d = s5 / "data" / "train_si284"
    d.mkdir(parents=True)
    wav, segs, text, utt2spk = [], [], [], []
    for r in range(2):
        write_tone(s5 / "wav" / f"rec{r}.wav", 3.0, r)
        wav.append(f"rec{r} wav/rec{r}.wav\n")
        for k in range(3):
            utt = f"spk{r}-rec{r}-{k}"
            segs.append(f"{utt} rec{r} {k:.1f} {k + 1:.1f}\n")
            text.append(f"{utt} {sentence(rng)}\n")
            utt2spk.append(f"{utt} spk{r}\n")
    (d / "wav.scp").write_text("".join(wav))
    (d / "segments").write_text("".join(segs))
    (d / "text").write_text("".join(text))
    (d / "utt2spk").write_text("".join(utt2spk))
    # dev: whole recordings with absolute paths; test: a piped command.
    for part, piped in (("test_dev93", False), ("test_eval92", True)):
        d = s5 / "data" / part
        d.mkdir(parents=True)
        lines, text = [], []
        for k in range(2):
            utt = f"{part}-{k}"
            path = write_tone(root / "audio" / part / f"{utt}.wav", 1.5, 10 + k)
            lines.append(f"{utt} cat {path} |\n" if piped else f"{utt} {path}\n")
            text.append(f"{utt} {sentence(rng)}\n")
        (d / "wav.scp").write_text("".join(lines))
        (d / "text").write_text("".join(text))
    return s5 / "data"


@pytest.mark.slow
def test_kaldi_data_recipe_stages_0_to_3(tmp_path: Path) -> None:
    data_root = kaldi_tree(tmp_path / "kaldi")
    recipe = recipe_copy(tmp_path, "kaldi_data")
    names = ["--train-part", "train_si284", "--dev-part", "test_dev93", "--test-parts", "test_eval92"]
    res = subprocess.run(["bash", "run.sh", "--data-root", str(data_root), "--train-part", "train", "--stop-stage", "0"],
                         cwd=recipe, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "--train-part" in res.stderr and "train does not exist" in res.stderr
    run_recipe(recipe, f"--data-root={data_root}", *names, "--stop-stage", "3", "--nj", "1")
    data = recipe / "data"
    cuts = check_stages_0_to_3(data, ["train_si284", "test_dev93", "test_eval92"], "char")
    train = {c.id: c for c in cuts[("train_si284", "wb")]}
    assert len(train) == 3 * 6 and train["spk1-rec1-2"].start == pytest.approx(2.0)  # + speed copies
    assert train["spk1-rec1-2"].recording.sources[0].source == str(data_root.parent / "wav" / "rec1.wav")
    test = load_manifest(data / "manifests" / "recordings_test_eval92.jsonl.gz")
    assert all(r.sources[0].type == "command" for r in test)
    # One import job per part, each with its log.
    assert len(list((data / "log").glob("import_kaldi.*.log"))) == 3
