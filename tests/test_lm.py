"""LSTM LMs: perplexity, the KD + trust loss, resume, bad text, N-best rescoring."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from kdasr.cli.main import cli
from kdasr.config import ConfigError
from kdasr.lm.data import LmDataError, Vocab, load_text, make_batches
from kdasr.lm.losses import lm_kd_loss
from kdasr.lm.model import LstmLm
from kdasr.lm.rescore import NgramScorer, hypothesis_features, pick, rescore
from kdasr.lm.score import EnsembleLm, load_lm, perplexity
from kdasr.lm.trainer import train_lm
from kdasr.train.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _vocab() -> Vocab:
    return Vocab(["<unk>", "<s>", "</s>", "a", "b"])


def _constant_lm(probs: list[float]) -> LstmLm:
    """An LM that predicts ``probs`` at every position (zero output weights, log-prob biases)."""
    model = LstmLm(len(probs), embed=4, hidden=4, num_layers=1, dropout=0.0, tie_weights=False)
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.copy_(torch.tensor(probs).log())
    return model.eval()


def test_perplexity_of_a_constant_model(tmp_path):
    probs = [0.1, 0.1, 0.2, 0.4, 0.2]
    text = tmp_path / "t.txt"
    text.write_text("a b\n\na\n")  # predicted: a b </s> a </s>
    stats = perplexity(_constant_lm(probs), _vocab(), load_text(text, _vocab()))
    expected = math.exp(-(2 * math.log(0.4) + 3 * math.log(0.2)) / 5)
    assert stats["tokens"] == 5
    assert stats["ppl"] == pytest.approx(expected, rel=1e-5)


def test_ensemble_perplexity_averages_probabilities(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("a\n")  # predicted: a </s>
    ens = EnsembleLm([_constant_lm([0.1, 0.1, 0.2, 0.4, 0.2]), _constant_lm([0.1, 0.1, 0.4, 0.2, 0.2])])
    stats = perplexity(ens, _vocab(), load_text(text, _vocab()))
    assert stats["ppl"] == pytest.approx(1 / 0.3, rel=1e-5)  # both tokens get (0.4 + 0.2) / 2


def test_lm_eval_cli_on_a_uniform_model(tmp_path):
    model = _constant_lm([0.2] * 5)
    ckpt = tmp_path / "lm.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "vocab": _vocab().words, "step": 0,
                           "model_cfg": {"name": "lstm", "embed": 4, "hidden": 4, "num_layers": 1,
                                         "dropout": 0.0, "tie_weights": False}})
    text = tmp_path / "t.txt"
    text.write_text("a b a\nb zzz\n")  # zzz -> <unk>, still a word
    res = CliRunner().invoke(cli, ["lm", "eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.yaml"),
                                   str(text)])
    assert res.exit_code == 0, res.output
    assert "ppl 5.000" in res.output
    doc = yaml.safe_load((tmp_path / "e.yaml").read_text())
    assert doc["texts"][str(text)]["tokens"] == 7


# KD + trust: student uniform over 3 words, teacher p = (0.5, 0.3, 0.2), true word 1, lambda 0.5.
# CE = ln 3 = 1.098612; KL(q || uniform) = sum q ln 3q = 0.068959; r = 0.3 / 0.5 = 0.6.
# At T = 2: q ~ sqrt(p) = (0.4155, 0.3218, 0.2628), T^2 KL = 0.070555.
@pytest.mark.parametrize("trust,opts,temperature,expected", [
    ("none", {}, 1.0, 0.5 * 1.098612 + 0.5 * 0.068959),
    ("threshold", {"threshold": 0.5}, 1.0, 0.5 * 1.098612 + 0.5 * 0.068959),  # r = 0.6 >= 0.5: trusted
    ("threshold", {"threshold": 0.7}, 1.0, 1.098612),  # not trusted: CE alone
    ("smooth", {"gamma": 1.0}, 1.0, 0.7 * 1.098612 + 0.3 * 0.068959),  # w = 0.6
    ("smooth", {"gamma": 2.0}, 1.0, 0.82 * 1.098612 + 0.18 * 0.068959),  # w = 0.36
    ("none", {}, 2.0, 0.5 * 1.098612 + 0.5 * 0.070555),
])
def test_kd_trust_loss_by_hand(trust, opts, temperature, expected):
    student = torch.zeros(1, 2, 3)
    teacher = torch.tensor([0.5, 0.3, 0.2]).log().expand(1, 2, 3).clone()
    teacher[0, 1] = torch.tensor([5.0, -3.0, 1.0])  # a padded position: must not count
    targets = torch.tensor([[1, -100]])
    loss, stats = lm_kd_loss(student, [teacher], targets, 0.5, temperature, trust, opts)
    assert float(loss) == pytest.approx(expected, abs=1e-5)


def test_kd_averages_teachers_before_the_kl():
    student = torch.zeros(1, 1, 3)
    t1 = torch.tensor([0.7, 0.2, 0.1]).log().view(1, 1, 3)
    t2 = torch.tensor([0.3, 0.4, 0.3]).log().view(1, 1, 3)  # mean (0.5, 0.3, 0.2)
    loss, _ = lm_kd_loss(student, [t1, t2], torch.tensor([[1]]), 1.0, 1.0, "none")
    assert float(loss) == pytest.approx(0.068959, abs=1e-5)


def _corpus(tmp_path: Path) -> tuple[Path, Path]:
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    lines = [("a b " * (1 + i % 4)).strip() + (" c" if i % 3 else "") for i in range(120)]
    train.write_text("\n".join(lines) + "\n")
    dev.write_text("a b c\na b a b\n")
    return train, dev


def _cfg(train: Path, dev: Path, **train_opts) -> dict:
    return {"data": {"train": str(train), "dev": str(dev), "max_tokens": 40},
            "model": {"embed": 8, "hidden": 8, "num_layers": 1, "dropout": 0.1},
            "train": {"epochs": 2, "save_every_n": 5, "log_every_n": 5, **train_opts}}


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_resume_after_stop_matches_one_run(tmp_path):
    train, dev = _corpus(tmp_path)
    train_lm(_cfg(train, dev), tmp_path / "one")
    train_lm(_cfg(train, dev, max_steps=7), tmp_path / "two")  # stops mid-epoch 1 with checkpoint-7
    assert (tmp_path / "two" / "checkpoints" / "checkpoint-7.pt").is_file()
    state = train_lm(_cfg(train, dev), tmp_path / "two")
    assert state.epoch == 2
    for k, v in _weights(tmp_path / "one" / "epoch-2.pt").items():
        assert torch.equal(v, _weights(tmp_path / "two" / "epoch-2.pt")[k]), k
    assert (tmp_path / "two" / "config.yaml").is_file() and (tmp_path / "two" / "train_summary.yaml").is_file()


@pytest.mark.slow
def test_resume_after_sigkill_matches_one_run(tmp_path, one_thread):
    train, dev = _corpus(tmp_path)
    cfg = _cfg(train, dev, epochs=3, save_every_n=3)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    train_lm(cfg, tmp_path / "one")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kdasr", "lm", "train", str(tmp_path / "c.yaml"),
                             "--exp-dir", str(tmp_path / "two")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "two" / "checkpoints").glob("checkpoint-*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "two" / "epoch-3.pt").is_file(), "the run ended before it could be killed"
    train_lm(cfg, tmp_path / "two")
    for k, v in _weights(tmp_path / "one" / "epoch-3.pt").items():
        assert torch.equal(v, _weights(tmp_path / "two" / "epoch-3.pt")[k]), k


def test_distill_runs_with_trust_and_writes_its_config(tmp_path):
    train, dev = _corpus(tmp_path)
    train_lm(_cfg(train, dev, epochs=1), tmp_path / "teacher")
    cfg = _cfg(train, dev, epochs=1)
    cfg["model"]["hidden"] = 4
    cfg["kd"] = {"teachers": [str(tmp_path / "teacher" / "best.pt")], "trust": "threshold", "threshold": 0.3}
    train_lm(cfg, tmp_path / "student", distill=True)
    saved = yaml.safe_load((tmp_path / "student" / "config.yaml").read_text())
    assert saved["kd"]["trust"] == "threshold" and saved["kd"]["lambda"] == 0.5
    model, vocab, _ = load_lm(tmp_path / "student" / "best.pt")
    assert vocab.words == load_lm(tmp_path / "teacher" / "best.pt")[1].words


def test_config_typos_and_missing_teachers_are_errors(tmp_path):
    train, dev = _corpus(tmp_path)
    with pytest.raises(ConfigError, match="train.epoch"):
        train_lm({**_cfg(train, dev), "train": {"epoch": 3}}, tmp_path / "x")
    with pytest.raises(ConfigError, match="kd.teachers"):
        train_lm(_cfg(train, dev), tmp_path / "x", distill=True)
    with pytest.raises(ConfigError, match="kd.trust"):
        train_lm({**_cfg(train, dev), "kd": {"teachers": ["t.pt"], "trust": "always"}}, tmp_path / "x", distill=True)


def test_bad_text_empty_oov_only_and_non_utf8(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"a b\n\n   \nzzz yyy\nb\n")
    text = load_text(path, _vocab())
    assert text.sentences == [[3, 4], [4]]
    assert text.skipped == {"empty": 2, "oov_only": 1}
    path.write_bytes(b"a b\nb \xff a\n")
    with pytest.raises(LmDataError, match=r"t\.txt:2: not UTF-8"):
        load_text(path, _vocab())
    path.write_text("zzz\n\n")
    with pytest.raises(LmDataError, match="no usable sentence"):
        load_text(path, _vocab())


def test_bad_text_through_the_cli_is_one_line(tmp_path):
    train, dev = _corpus(tmp_path)
    dev.write_bytes(b"a b\n\xfe\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(train, dev)))
    res = CliRunner().invoke(cli, ["lm", "train", str(cfg), "--exp-dir", str(tmp_path / "x")])
    assert res.exit_code == 1
    assert f"Error: {dev}:2: not UTF-8 text" in res.output
    assert "Traceback" not in res.output


def test_batches_are_reproducible_and_cover_every_sentence():
    sents = [[3] * (i % 7) for i in range(50)]
    a, b = make_batches(sents, 20, shuffle_seed=3), make_batches(sents, 20, shuffle_seed=3)
    assert a == b and sorted(i for batch in a for i in batch) == list(range(50))
    assert all(len(batch) * (max(len(sents[i]) for i in batch) + 1) <= 20 for batch in a if len(batch) > 1)


ARPA = """\\data\\
ngram 1=5
ngram 2=1

\\1-grams:
-1.0\t</s>
-99\t<s>
-0.5\ta
-1.0\tb
-2.0\tc

\\2-grams:
-0.1\tc b

\\end\\
"""


def _nbest(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "G.arpa").write_text(ARPA)
    # u1: acoustics prefer "c" (the wrong word); u2: acoustics alone are right.
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("u1\t1\t-1.0\tc\nu1\t2\t-1.5\ta\nu2\t1\t-0.5\tb a\nu2\t2\t-2.0\tb\nu2\t3\t-3.0\ta a\n")
    refs = tmp_path / "text"
    refs.write_text("u1 a\nu2 b a\n")
    return tmp_path / "G.arpa", nbest, refs


def test_rescoring_order_on_a_hand_made_nbest(tmp_path):
    from kdasr.lm.rescore import read_nbest

    arpa, nbest_path, _ = _nbest(tmp_path)
    ngram = NgramScorer(arpa)
    ln10 = math.log(10)
    assert ngram("a") == pytest.approx((-0.5 - 1.0) * ln10, abs=1e-4)  # a, </s>
    feats = hypothesis_features(read_nbest(nbest_path), ngram, 0.0, 0.0, None)
    assert pick(feats, 0.0, 0.0, 0.0) == {"u1": "c", "u2": "b a"}  # acoustics alone
    # n-gram weight 1: u1 "c" -1.0 - 3 ln10 = -7.91 < "a" -1.5 - 1.5 ln10 = -4.95
    assert pick(feats, 1.0, 0.0, 0.0) == {"u1": "a", "u2": "b a"}
    # -2 per word: u2 "b" -2 - 2 = -4 beats "b a" -0.5 - 4 = -4.5; u1's hypotheses are one word each
    assert pick(feats, 0.0, 0.0, -2.0) == {"u1": "c", "u2": "b"}
    lm_feats = {cid: [{**h, "lstm": 5.0 if h["text"] == "a a" else 0.0} for h in hyps] for cid, hyps in feats.items()}
    assert pick(lm_feats, 0.0, 1.0, 0.0)["u2"] == "a a"  # an LM that loves "a a" outweighs 2.5 nats of acoustics


def test_rescore_cli_scans_dev_and_writes_results(tmp_path):
    arpa, nbest, refs = _nbest(tmp_path)
    model = _constant_lm([0.1, 0.1, 0.2, 0.4, 0.2])  # vocab <unk> <s> </s> a b: prefers a
    ckpt = tmp_path / "lm.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "vocab": _vocab().words, "step": 0,
                           "model_cfg": {"name": "lstm", "embed": 4, "hidden": 4, "num_layers": 1,
                                         "dropout": 0.0, "tie_weights": False}})
    out = tmp_path / "res"
    res = CliRunner().invoke(cli, ["rescore", "--dev-nbest", str(nbest), "--dev-cuts", str(refs), "--test-nbest",
                                   str(nbest), "--test-cuts", str(refs), "--arpa", str(arpa), "--lm", str(ckpt),
                                   "--out-dir", str(out), "--decode-lm-weight", "0", "--ngram-weights", "0,1",
                                   "--lm-weights", "0", "--word-bonuses", "0"])
    assert res.exit_code == 0, res.output
    summary = yaml.safe_load((out / "rescore.yaml").read_text())
    assert summary["test"]["first_pass"]["errors"] == 1
    assert summary["test"]["ngram_only"]["errors"] == 0
    assert summary["test"]["ngram_only"]["weights"]["ngram_weight"] == 1.0
    assert (out / "errs-test-rescore.txt").read_text().startswith("%WER 0.00")
    direct = rescore(nbest, refs, nbest, refs, arpa, tmp_path / "res2", [ckpt], 0.0, 0.0, [0.0], [0.0, 1.0], [0.0])
    assert direct["test"]["lstm"]["errors"] == 0  # the LM (p(a) > p(c) = unk) fixes u1 without the n-gram


def test_demo_lm_corpus_holds_out_test_sentences(tmp_path):
    res = CliRunner().invoke(cli, ["prepare", "demo-lm", "--out-dir", str(tmp_path), "--size", "tiny",
                                   "--num-sentences", "3000"])
    assert res.exit_code == 0, res.output
    train = (tmp_path / "train.txt").read_text().splitlines()
    test = (tmp_path / "test.txt").read_text().splitlines()
    stats = yaml.safe_load((tmp_path / "stats.yaml").read_text())
    audio_train = set(train[: stats["audio_train_transcripts"]])
    assert len(train) == stats["audio_train_transcripts"] + 3000
    assert not [t for t in test if t in set(train) and t not in audio_train]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sentence_scores_on_gpu_match_cpu():
    from kdasr.lm.score import sentence_logprobs

    torch.manual_seed(0)
    model = LstmLm(5, embed=8, hidden=8, num_layers=2, dropout=0.0).eval()
    sents = [[3, 4, 3], [4], [], [3, 3, 3, 3, 4]]
    cpu = sentence_logprobs(model, _vocab(), sents)
    gpu = sentence_logprobs(model.cuda(), _vocab(), sents)
    assert gpu == pytest.approx(cpu, abs=1e-4)


@pytest.mark.slow
def test_lm_recipe_stages_1_to_5_on_tiny_text(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    overrides = "train.epochs=1 model.embed=8 model.hidden=8 model.num_layers=1 data.max_tokens=400"
    res = subprocess.run(["bash", str(REPO / "recipes" / "lm.sh"), "--demo-size", "tiny", "--demo-lm-sentences", "300",
                          "--conf", str(REPO / "egs" / "demo" / "conf"), "--teacher-seeds", "1 2",
                          "--trust-forms", "none smooth", "--lm-overrides", overrides],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    table = (tmp_path / "exp" / "lm" / "RESULTS.md").read_text()
    for name in ("teacher_seed1", "teacher_seed2", "student", "student_kd_none", "student_kd_smooth"):
        assert f"| {name} |" in table
    kd = yaml.safe_load((tmp_path / "exp" / "lm" / "student_kd_smooth" / "config.yaml").read_text())["kd"]
    assert kd["trust"] == "smooth" and len(kd["teachers"]) == 2


def test_cached_teachers_train_the_same_student_as_online_ones(tmp_path):
    train, dev = _corpus(tmp_path)
    train_lm(_cfg(train, dev, epochs=1), tmp_path / "teacher")
    runs = {}
    for cache in (True, False):
        cfg = _cfg(train, dev, epochs=1)
        cfg["kd"] = {"teachers": [str(tmp_path / "teacher" / "best.pt")] * 2, "temperature": 2.0,
                     "trust": "smooth", "cache_teachers": cache}
        train_lm(cfg, tmp_path / f"s{cache}", distill=True)
        runs[cache] = _weights(tmp_path / f"s{cache}" / "epoch-1.pt")
    for k, v in runs[True].items():  # float16 cache: equal up to rounding
        assert torch.allclose(v, runs[False][k], atol=2e-3), k
