"""``kdasr decode`` options: LM weight scan, WFST worker processes, n-best output.

Most cases replace the network's output with designed log-probs (keyed by
cut id), so the search decides the result and the expected answer is known;
one case runs a real (untrained) checkpoint over feature cuts end to end.
"""
from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner
from lhotse import CutSet
from lhotse.utils import fastcopy

from kdasr.cli.main import cli
from kdasr.data.tokenizer import build_char_lang
from kdasr.decode.graph import build_graph
from kdasr.utils.io import save_manifest
from synth import GRAPH_WORDS, ambiguous, decode, make_feature_cuts, random_peaky, text_cuts, write_checkpoint

WORDS = GRAPH_WORDS


@pytest.mark.parametrize("method", ["wfst", "beam"])
def test_scan_picks_the_weight_of_lowest_dev_wer(decode_setup, network_output, tmp_path, method) -> None:
    tok = decode_setup["tok"]
    # At a tiny LM weight the acoustics win ('ON TWO', 'ONE THE'); at 1 the LM gives the references.
    texts = {"dev-1": "ONE TWO", "dev-2": "ON THE", "test-1": "ON THE", "test-2": "ONE TWO"}
    acoustic = {"dev-1": (0.4, "TWO"), "dev-2": (0.6, "THE"), "test-1": (0.6, "THE"), "test-2": (0.4, "TWO")}
    network_output.update({cid: ambiguous(tok, *acoustic[cid]) for cid in texts})
    dev = text_cuts(tmp_path / "cuts_dev.jsonl.gz", {k: v for k, v in texts.items() if k.startswith("dev")})
    test = text_cuts(tmp_path / "cuts_test.jsonl.gz", {k: v for k, v in texts.items() if k.startswith("test")})
    out = tmp_path / "out"
    summary = decode(decode_setup, out, test, "--method", method, "--opt", f"graph_dir={decode_setup['graph']}",
                     "--scan-lm-weights", "0.01,1,0.02", "--scan-cuts", str(dev))
    scan = yaml.safe_load((out / f"lm-weight-scan-dev-{method}.yaml").read_text())
    assert [row["lm_weight"] for row in scan["table"]] == [0.01, 1.0, 0.02]
    assert [row["wer"] for row in scan["table"]] == [50.0, 0.0, 50.0]
    assert scan["best_lm_weight"] == summary["lm_weight"] == summary["decoder_opts"]["lm_weight"] == 1.0
    assert summary["lm_weight_scan"]["table"] == f"lm-weight-scan-dev-{method}.md"
    assert "| 1 **best** | 0.00 |" in (out / summary["lm_weight_scan"]["table"]).read_text()
    assert summary["wer"] == summary["cer"] == 0.0
    assert (out / f"errs-test-{method}.txt").read_text().splitlines()[2].startswith("%CER 0.00 [ 0 / 13 characters")


def test_parallel_wfst_equals_serial_and_nbest_file(decode_setup, network_output, tmp_path) -> None:
    tok = decode_setup["tok"]
    gen = torch.Generator().manual_seed(5)
    texts = {}
    for i, n in enumerate((3, 1, 4, 2, 5, 2, 3)):
        network_output[f"utt-{i}"] = random_peaky(tok, WORDS, n, gen, margin=1.0)  # noisy: the LM matters
        texts[f"utt-{i}"] = "ONE TWO"
    cuts = text_cuts(tmp_path / "cuts_test.jsonl.gz", texts)
    graph = ["--method", "wfst", "--opt", f"graph_dir={decode_setup['graph']}"]
    decode(decode_setup, tmp_path / "serial", cuts, *graph)
    parallel = decode(decode_setup, tmp_path / "parallel", cuts, *graph, "--num-jobs", "2")
    assert parallel["decoder_opts"]["num_jobs"] == 2
    serial_recogs = (tmp_path / "serial" / "recogs-test-wfst.txt").read_text()
    assert (tmp_path / "parallel" / "recogs-test-wfst.txt").read_text() == serial_recogs
    assert len({line for line in serial_recogs.splitlines() if "hyp=" in line}) > 2  # not all the same output

    decode(decode_setup, tmp_path / "nbest", cuts, *graph, "--num-jobs", "2", "--opt", "nbest=3")
    rows = [line.split("\t") for line in (tmp_path / "nbest" / "nbest-test-wfst.txt").read_text().splitlines()]
    assert {r[0] for r in rows} == set(texts) and max(int(r[1]) for r in rows) > 1
    top = {r[0]: r[3] for r in rows if r[1] == "1"}
    assert (tmp_path / "nbest" / "recogs-test-wfst.txt").read_text() == serial_recogs
    for cid, text in top.items():
        assert f"{cid}:\thyp={text.split()}" in serial_recogs


def test_option_errors(decode_setup, network_output, tmp_path) -> None:
    tok = decode_setup["tok"]
    network_output["dev-1"] = ambiguous(tok, 0.4, "TWO")
    dev = text_cuts(tmp_path / "cuts_dev.jsonl.gz", {"dev-1": "ONE TWO"})
    base = ["decode", "--checkpoint", str(decode_setup["ckpt"]), "--cuts", str(dev), "--lang-dir", str(decode_setup["lang"]),
            "--out-dir", str(tmp_path / "out"), "--device", "cpu"]
    cases = [
        (["--num-jobs", "2"], "only the wfst method"),
        (["--scan-lm-weights", "0.5,1"], "needs both the weights and the dev cuts"),
        (["--scan-lm-weights", "0.5,x", "--scan-cuts", str(dev)], "not a comma-separated list"),
        (["--scan-lm-weights", "1", "--scan-cuts", str(dev)], "'greedy' has no LM weight"),
        (["--method", "beam", "--scan-lm-weights", "1", "--scan-cuts", str(dev)], "no LM whose weight"),
        (["--method", "wfst", "--opt", f"graph_dir={decode_setup['graph']}", "--opt", "lm_weight=1",
          "--scan-lm-weights", "1", "--scan-cuts", str(dev)], "not both"),
    ]
    for args, message in cases:
        res = CliRunner().invoke(cli, base + args)
        assert res.exit_code != 0 and message in res.output, (args, res.output)


def test_real_checkpoint_end_to_end(tmp_path) -> None:
    """Features through an (untrained) network, a beam+LM weight scan on dev, parallel WFST on test."""
    cuts = make_feature_cuts(tmp_path / "feats", num_cuts=6)
    dev, test = tmp_path / "cuts_dev.jsonl.gz", tmp_path / "cuts_test.jsonl.gz"
    save_manifest(cuts.subset(first=3), dev)
    save_manifest(cuts, test)
    texts = [c.supervisions[0].text for c in cuts]
    tok = build_char_lang(texts, tmp_path / "lang")
    setup = {"ckpt": write_checkpoint(tmp_path / "model.pt", tok), "lang": tmp_path / "lang"}
    graph = build_graph(tmp_path / "lang", texts, order=2)
    summary = decode(setup, tmp_path / "beam", test, "--method", "beam", "--opt", f"graph_dir={graph}",
                     "--scan-lm-weights", "0.5,2", "--scan-cuts", str(dev))
    assert summary["lm_weight"] in (0.5, 2.0) and summary["ref_words"] > 0
    serial = decode(setup, tmp_path / "serial", test, "--method", "wfst", "--opt", f"graph_dir={graph}")
    parallel = decode(setup, tmp_path / "parallel", test, "--method", "wfst", "--opt", f"graph_dir={graph}",
                      "--num-jobs", "2")
    assert parallel["wer"] == serial["wer"]
    assert ((tmp_path / "parallel" / "recogs-test-wfst.txt").read_text()
            == (tmp_path / "serial" / "recogs-test-wfst.txt").read_text())


def test_references_outside_the_token_set_are_scored_as_written(tmp_path) -> None:
    """A test transcript with a character the token set lacks: decoded anyway, its cut named in a warning."""
    cuts = make_feature_cuts(tmp_path / "feats", num_cuts=4)
    tok = build_char_lang([c.supervisions[0].text for c in cuts], tmp_path / "lang")
    odd = cuts[1].id
    cuts = CutSet.from_cuts(fastcopy(c, supervisions=[fastcopy(c.supervisions[0], text="ÉTÉ " + c.supervisions[0].text)])
                            if c.id == odd else c for c in cuts)
    test = tmp_path / "cuts_test.jsonl.gz"
    save_manifest(cuts, test)
    setup = {"ckpt": write_checkpoint(tmp_path / "model.pt", tok), "lang": tmp_path / "lang"}
    summary = decode(setup, tmp_path / "out", test)
    words = sum(len(c.supervisions[0].text.split()) for c in cuts)
    assert summary["ref_words"] == words  # the odd word is scored, as an error
    assert summary["refs_outside_token_set"] == [odd]
    assert "ÉTÉ" in (tmp_path / "out" / "recogs-test-greedy.txt").read_text()
    log = (tmp_path / "out" / "log" / "decode.log").read_text()
    assert "outside the token set" in log and odd in log
