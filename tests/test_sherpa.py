"""Shipping a student: sherpa-onnx decodes the export exactly as kdasr does; features match; kdasr transcribe.

A tiny demo corpus (synthesized speech, 16 kHz and its 8 kHz telephone view)
trains a tiny CNN per view for a few epochs (it still spells mostly wrong
letters: flat, frequently switching outputs are many close calls for the
comparison); it is exported with
``--format sherpa-onnx`` and ``sherpa_onnx.OfflineRecognizer`` (which computes
its own features from the wav files) must give the hypotheses of ``kdasr
decode`` (stored, lilcom-compressed features) on every utterance.
"""
from __future__ import annotations

import ast
import json
import logging
import shutil
import subprocess
import sys
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner
from lhotse import CutSet, Fbank, FbankConfig
from lhotse.utils import fastcopy

from kdasr.cli.main import cli
from kdasr.data.demo import make_demo_corpus
from kdasr.data.features import TICK_POWER, compute_fbank, fbank_extractor, prepare_fbank
from kdasr.data.knf_fbank import sherpa_feature_options
from kdasr.data.telephone import prepare_narrowband
from kdasr.data.tokenizer import build_char_lang, texts_from_cuts
from kdasr.decode.graph import build_graph
from kdasr.export_sherpa import SHERPA_FST_BEAM, SHERPA_FST_MAX_ACTIVE

sherpa_onnx = pytest.importorskip("sherpa_onnx")
pytest.importorskip("onnxruntime")

VIEWS = {"wb": 16000, "nb": 8000}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Iterator[dict]:
    """Corpus, features, char tokens, graph, and per view a trained checkpoint and its sherpa-onnx export."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ship")
    data = root / "data"
    make_demo_corpus(data, size="tiny", num_train=24, num_dev=4, num_test=8)
    manifests = data / "manifests"
    prepare_narrowband(manifests, ("train", "dev", "test"), data / "narrowband")
    prepare_fbank(manifests, data / "fbank", ["train", "dev", "test"], ["wb", "nb"])
    train_cuts = CutSet.from_file(data / "fbank" / "cuts_train_wb.jsonl.gz")
    build_char_lang(texts_from_cuts(train_cuts), data / "lang_char")
    graph = build_graph(data / "lang_char", texts_from_cuts(train_cuts), order=2)
    runner = CliRunner()
    out: dict = {"root": root, "data": data, "graph": graph, "views": {}}
    for view, rate in VIEWS.items():
        cfg = {
            "data": {"train_cuts": str(data / "fbank" / f"cuts_train_{view}.jsonl.gz"),
                     "dev_cuts": str(data / "fbank" / f"cuts_dev_{view}.jsonl.gz"),
                     "lang_dir": str(data / "lang_char"), "cmvn": str(data / "fbank" / f"cmvn_{view}.json"),
                     "max_duration": 20.0, "num_buckets": 2, "augment": {"specaugment": {"enabled": False}}},
            "model": {"name": "cnn", "channels": 48, "num_layers": 2, "kernel_size": 5},
            "train": {"epochs": 6, "lr": 3e-3, "warmup_steps": 5, "save_every_n": 0, "keep_last_n": 0,
                      "early_stop_patience": 0, "log_every_n": 50, "amp": False, "device": "cpu"},
        }
        config = root / f"train_{view}.yaml"
        config.write_text(yaml.safe_dump(cfg))
        exp = root / "exp" / view
        res = runner.invoke(cli, ["train", str(config), "--exp-dir", str(exp)])
        assert res.exit_code == 0, res.output
        export = exp / "sherpa"
        res = runner.invoke(cli, ["export", "--checkpoint", str(exp / "best.pt"), "--format", "sherpa-onnx",
                                  "--out-dir", str(export), "--graph-dir", str(graph)])
        assert res.exit_code == 0, res.output
        assert f"sample_rate={rate}, feature_dim={40 if view == 'nb' else 80}" in res.output
        out["views"][view] = {"rate": rate, "exp": exp, "export": export}
    yield out
    torch.set_num_threads(threads)


def _kdasr_decode(shipped: dict, view: str, method: str, *opts: str) -> dict[str, str]:
    v = shipped["views"][view]
    out = v["exp"] / f"decode_{method}"
    args = ["decode", "--checkpoint", str(v["exp"] / "best.pt"), "--cuts",
            str(shipped["data"] / "fbank" / f"cuts_test_{view}.jsonl.gz"), "--lang-dir",
            str(shipped["data"] / "lang_char"), "--method", method, "--out-dir", str(out)]
    for o in opts:
        args += ["--opt", o]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    hyps = {}
    for line in (out / f"recogs-test_{view}-{method}.txt").read_text().splitlines():
        key, val = line.split(":\t", 1)
        if val.startswith("hyp="):
            hyps[key] = " ".join(ast.literal_eval(val[4:]))
    return hyps


def _sherpa(shipped: dict, view: str, model: str, graph: bool) -> dict[str, str]:
    v = shipped["views"][view]
    d = v["export"]
    recognizer = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=str(d / model), tokens=str(d / "tokens.txt"), sample_rate=v["rate"],
        feature_dim=40 if view == "nb" else 80, num_threads=1,
        ctc_graph=str(d / "TLG.fst") if graph else "", ctc_max_active=SHERPA_FST_MAX_ACTIVE)
    hyps = {}
    for cut in CutSet.from_file(shipped["data"] / "fbank" / f"cuts_test_{view}.jsonl.gz"):
        audio, rate = sf.read(cut.recording.sources[0].source, dtype="float32")
        assert rate == v["rate"]
        stream = recognizer.create_stream()
        stream.accept_waveform(rate, audio)
        recognizer.decode_stream(stream)
        hyps[cut.id] = " ".join(stream.result.text.split())
    return hyps


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_sherpa_onnx_gives_kdasr_greedy_and_wfst_hypotheses(shipped, view):
    greedy = _kdasr_decode(shipped, view, "greedy")
    assert sum(len(h.split()) for h in greedy.values()) >= len(greedy), greedy  # a model that says something
    assert _sherpa(shipped, view, "model.onnx", graph=False) == greedy
    # sherpa-onnx runs kaldi-decoder's FasterDecoder at its default beam
    wfst = _kdasr_decode(shipped, view, "wfst", f"graph_dir={shipped['graph']}", f"beam={SHERPA_FST_BEAM:g}",
                         f"max_active={SHERPA_FST_MAX_ACTIVE}")
    assert _sherpa(shipped, view, "model.onnx", graph=True) == wfst
    int8 = _sherpa(shipped, view, "model.int8.onnx", graph=False)
    same = sum(int8[k] == greedy[k] for k in greedy)
    assert same >= 0.5 * len(greedy), (same, len(greedy))  # int8 is close; the benchmark measures its WER


def test_export_dir_contents_and_readme(shipped):
    d = shipped["views"]["nb"]["export"]
    for name in ("model.onnx", "model.int8.onnx", "tokens.txt", "TLG.fst", "README.md", "model.meta.yaml",
                 "lang.yaml", "words.txt", "graph.yaml"):
        assert (d / name).is_file(), name
    assert (d / "tokens.txt").read_text().splitlines()[0] == "<blk> 0"
    readme = (d / "README.md").read_text()
    assert "sample_rate=8000" in readme and "feature_dim=40" in readme and "--feat-dim=40" in readme
    assert 'ctc_graph="TLG.fst"' in readme and "--ctc.graph=TLG.fst" in readme
    meta = yaml.safe_load((d / "model.meta.yaml").read_text())
    assert meta["sample_rate"] == 8000 and meta["features"]["num_mel_bins"] == 40
    assert (d / "model.int8.onnx").stat().st_size < 0.8 * (d / "model.onnx").stat().st_size  # tiny: graph overhead


@pytest.mark.parametrize("rate", [8000, 16000])
def test_kdasr_features_are_sherpa_onnx_features(shipped, rate):
    """The options sherpa-onnx sets from sample rate and dim alone are kdasr's; stored features lose < 2**TICK_POWER."""
    cfg = fbank_extractor(rate).config
    sherpa_cfg = sherpa_onnx.FeatureExtractorConfig(sampling_rate=rate, feature_dim=cfg.num_mel_bins)
    for key, value in sherpa_feature_options(cfg).items():
        assert getattr(sherpa_cfg, key) == pytest.approx(value), key
    view = "nb" if rate == 8000 else "wb"
    lhotse_fbank = Fbank(FbankConfig(sampling_rate=rate, num_filters=cfg.num_mel_bins, snip_edges=False,
                                     dither=0.0, low_freq=cfg.low_freq, high_freq=cfg.high_freq))
    worst_stored = worst_lhotse = 0.0
    for cut in CutSet.from_file(shipped["data"] / "fbank" / f"cuts_test_{view}.jsonl.gz"):
        audio = cut.load_audio()
        exact = fbank_extractor(rate).extract(audio, rate)
        worst_stored = max(worst_stored, float(np.abs(cut.load_features() - exact).max()))
        worst_lhotse = max(worst_lhotse, float(np.abs(lhotse_fbank.extract(audio, rate) - exact).max()))
    assert worst_stored <= 2.0 ** (TICK_POWER - 1) + 1e-5
    # an independent implementation (lhotse's torch fbank) with the same options agrees to float rounding
    assert worst_lhotse < 2e-3


def test_reused_features_of_another_extractor_are_flagged(shipped, tmp_path, caplog):
    fbank = shipped["data"] / "fbank"
    cuts = CutSet.from_file(fbank / "cuts_test_wb.jsonl.gz")
    old = cuts.map(lambda c: fastcopy(c, features=fastcopy(c.features, type="kaldi-fbank")))
    old.to_file(tmp_path / "cuts_old.jsonl.gz")
    with caplog.at_level(logging.WARNING):
        compute_fbank(cuts, fbank / "test_wb", tmp_path / "cuts_old.jsonl.gz", progress_bar=False)
    assert "holds kaldi-fbank features, not kaldi-native-fbank" in caplog.text


def test_transcribe_mixed_rates_formats_and_a_corrupt_file(shipped, tmp_path):
    cuts = list(CutSet.from_file(shipped["data"] / "fbank" / "cuts_test_wb.jsonl.gz"))[:3]
    audio_dir = tmp_path / "audio"
    (audio_dir / "sub").mkdir(parents=True)
    files = []
    for cut, (rate, ext) in zip(cuts, [(8000, "wav"), (16000, "flac"), (44100, "wav")]):
        x = cut.resample(rate).load_audio()[0]
        path = audio_dir / ("sub" if rate == 44100 else "") / f"{cut.id}_{rate}.{ext}"
        sf.write(path, np.stack([x, 0.5 * x], axis=1) if rate == 44100 else x, rate)  # 44.1 kHz in stereo
        files.append(path)
    (audio_dir / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    model = shipped["views"]["wb"]["export"]
    proc = subprocess.run([sys.executable, "-m", "kdasr", "transcribe", str(model), str(audio_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = dict(line.split("\t", 1) for line in proc.stdout.splitlines())
    assert sorted(lines) == sorted(str(f) for f in files)
    assert all(lines.values()), lines
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 2 and "broken.wav: Error opening" in errors[0] and "Traceback" not in proc.stderr
    assert "1 of 4 files could not be transcribed" in errors[1]
    # the 16 kHz file gets the text kdasr decode gives its stored features
    greedy = _kdasr_decode(shipped, "wb", "greedy")
    assert lines[str(files[1])] == greedy[cuts[1].id]
    # JSON lines with word times inside the audio; the checkpoint gives the export's text
    ckpt = shipped["views"]["wb"]["exp"] / "best.pt"
    res = CliRunner().invoke(cli, ["transcribe", str(ckpt), str(files[1]), "--json", "--method", "wfst",
                                   "--graph-dir", str(shipped["graph"])])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["file"] == str(files[1]) and [w["word"] for w in rec["words"]] == rec["text"].split()
    times = [t for w in rec["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= rec["duration"]


def test_export_errors(shipped, tmp_path):
    v = shipped["views"]["wb"]
    runner = CliRunner()
    res = runner.invoke(cli, ["export", "--checkpoint", str(v["exp"] / "best.pt"), "--format", "sherpa-onnx",
                              "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "--out-dir" in res.output
    other = build_char_lang(["xyz"], tmp_path / "lang_other").lang_dir
    res = runner.invoke(cli, ["export", "--checkpoint", str(v["exp"] / "best.pt"), "--format", "sherpa-onnx",
                              "--out-dir", str(tmp_path / "x"), "--lang-dir", str(other)])
    assert res.exit_code == 1 and "not the token set" in res.output
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.tmp-*"))
    # a previous export stays whole when a new one fails
    shutil.copytree(v["export"], tmp_path / "keep")
    res = runner.invoke(cli, ["export", "--checkpoint", str(v["exp"] / "best.pt"), "--format", "sherpa-onnx",
                              "--out-dir", str(tmp_path / "keep"), "--sample-rate", "8000"])
    assert res.exit_code == 1 and "trained on 16000 Hz features, not 8000 Hz" in res.output
    assert (tmp_path / "keep" / "model.onnx").is_file()
    # transcribe names what is wrong with a model
    wav = next(iter(CutSet.from_file(shipped["data"] / "fbank" / "cuts_test_wb.jsonl.gz"))).recording.sources[0].source
    (tmp_path / "empty").mkdir()
    res = runner.invoke(cli, ["transcribe", str(tmp_path / "empty"), wav])
    assert res.exit_code == 1 and "is not a kdasr export: needs model.onnx and model.meta.yaml" in res.output
    res = runner.invoke(cli, ["transcribe", str(v["export"]), wav, "--sample-rate", "8000"])
    assert res.exit_code == 1 and "takes 16000 Hz features, not 8000 Hz" in res.output
