"""``kdasr lm train|distill|eval`` and ``kdasr rescore``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import float_list, log_to, one_line
from kdasr.config import load_config

# Bad input (config, text, checkpoint) raises these from the LM library: one line, a traceback only with -v.
_one_line_errors = one_line(ValueError, FileNotFoundError, RuntimeError)



_configs = click.argument("configs", nargs=-1, required=True,
                          type=click.Path(exists=True, dir_okay=False, path_type=Path))
_exp_dir = click.option("--exp-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Where checkpoints, vocab.txt, logs, tensorboard and the resolved config go.")
_overrides = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config value, e.g. --set model.hidden=128 (repeatable).")
_resume = click.option("--resume/--no-resume", default=True,
                       help="Continue from the latest checkpoint in --exp-dir if there is one.")


@click.group()
def lm() -> None:
    """LSTM language models: train, distil (KD with trust regularization), evaluate."""


def _training_command(name: str, distill: bool, doc: str) -> click.Command:
    """``kdasr lm train`` and ``kdasr lm distill``: the same options, one trainer."""
    @_one_line_errors
    def run(configs: tuple[Path, ...], exp_dir: Path, overrides: tuple[str, ...], resume: bool) -> None:
        from kdasr.lm.trainer import train_lm

        train_lm(load_config(configs, overrides), exp_dir, resume=resume, distill=distill)

    run.__doc__ = doc
    return lm.command(name)(_configs(_exp_dir(_overrides(_resume(run)))))


train = _training_command("train", False, """Train an LSTM LM on text (data.train, one sentence a line); dev perplexity picks best.pt.

    CONFIGS are YAML files merged in order with data, model and train
    sections. An ensemble is several runs with other train.seed or model sizes.
    """)
distill = _training_command("distill", True, """Train a student LM on (1 - lambda w) CE + lambda w T^2 KL to the teachers' averaged distribution.

    The kd section lists the teacher checkpoints (kd.teachers, run online) and
    the trust form w (kd.trust: none, threshold, smooth); see kdasr.lm.losses.
    """)


@lm.command("eval")
@click.option("--checkpoint", "checkpoints", required=True, multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="LM checkpoint; repeat it to evaluate the ensemble (averaged next-word distributions).")
@click.option("--device", default="auto", help="auto, cpu or cuda.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures to this YAML file.")
@click.argument("texts", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_one_line_errors
def eval_(checkpoints: tuple[Path, ...], device: str, out: Optional[Path], texts: tuple[Path, ...]) -> None:
    """Perplexity of an LM (or an ensemble) on each of TEXTS (one sentence a line, </s> counted)."""
    import torch
    import yaml

    from kdasr.lm.score import evaluate_files
    from kdasr.utils.io import atomic_write_text

    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    result = evaluate_files(checkpoints, texts, dev)
    for path, stats in result.items():
        click.echo(f"{path}\tppl {stats['ppl']:.3f}\ttokens {stats['tokens']}\toov {100 * stats['oov_rate']:.2f}%"
                   f"\tparams {stats['num_params']}")
    if out is not None:
        doc = {"checkpoints": [str(c) for c in checkpoints], "texts": result}
        atomic_write_text(out, yaml.safe_dump(doc, sort_keys=False))


@click.command()
@click.option("--dev-nbest", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="nbest-*.txt of `kdasr decode --opt nbest=K` on the dev set (weights are scanned on it).")
@click.option("--dev-cuts", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The dev references: a cut manifest (.jsonl.gz) or a Kaldi text file (id words...).")
@click.option("--test-nbest", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--test-cuts", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--arpa", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The n-gram the decode used (<graph_dir>/G.arpa).")
@click.option("--lm", "lm_checkpoints", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="LSTM LM checkpoint (kdasr lm train|distill); repeat it for an ensemble; "
                   "without it, n-gram-only rescoring.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--decode-lm-weight", default=1.0, help="The lm_weight the N-best was decoded with.")
@click.option("--decode-word-score", default=0.0, help="The word_score the N-best was decoded with (beam).")
@click.option("--ngram-weights", default="0,0.25,0.5,0.75,1,1.5", callback=float_list, metavar="W1,W2,...")
@click.option("--lm-weights", default="0,0.25,0.5,0.75,1,1.5", callback=float_list, metavar="W1,W2,...")
@click.option("--word-bonuses", default="-1,0,1,2,3", callback=float_list, metavar="W1,W2,...",
              help="Per-word bonus in nats (negative: a penalty); CTC searches tend to delete words.")
@click.option("--name", default="test", help="Test-set name in output file names.")
@click.option("--device", default="auto", help="auto, cpu or cuda (LM scoring).")
@_one_line_errors
def rescore(dev_nbest: Path, dev_cuts: Path, test_nbest: Path, test_cuts: Path, arpa: Path,
            lm_checkpoints: tuple[Path, ...], out_dir: Path, decode_lm_weight: float, decode_word_score: float,
            ngram_weights: list[float], lm_weights: list[float], word_bonuses: list[float], name: str,
            device: str) -> None:
    """Rescore N-best lists with acoustic + n-gram + LSTM LM scores (weights from dev) and score the test set.

    Writes recogs-/errs-/wer-summary-<name>-rescore.txt, rescore.yaml (first
    pass, n-gram only and LSTM WER with their weights) and rescore-scan-dev.yaml.
    """
    import torch

    from kdasr.lm.rescore import rescore as run

    log_to(out_dir, "rescore")
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    summary = run(dev_nbest, dev_cuts, test_nbest, test_cuts, arpa, out_dir, lm_checkpoints, decode_lm_weight,
                  decode_word_score, ngram_weights, lm_weights, word_bonuses, name, dev)
    for tag, r in summary["test"].items():
        w = r.get("weights")
        click.echo(f"{tag}\t%WER {r['wer']:.2f} [ {r['errors']} / {r['ref_words']} ]"
                   + (f"\tdev {r['dev_wer']:.2f}\t" + " ".join(f"{k}={v:g}" for k, v in w.items()) if w else ""))


@lm.command()
@click.option("--lm-dirs", required=True, help="LM experiment dirs (each with ppl.yaml), the reference first, "
                                               "space-separated.")
@click.option("--rescore-dirs", default="", help="`kdasr rescore` output dirs, space-separated.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@_one_line_errors
def report(lm_dirs: str, rescore_dirs: str, out: Path) -> None:
    """Markdown tables: perplexity per LM (share of the first LM's parameters) and rescoring WER."""
    from kdasr.lm.report import perplexity_table, rescore_table
    from kdasr.utils.io import atomic_write_text

    text = "## LM perplexity\n\n" + perplexity_table(lm_dirs.split())
    if rescore_dirs.strip():
        text += "\n## N-best rescoring (weights chosen on dev)\n\n" + rescore_table(rescore_dirs.split())
    atomic_write_text(out, text)
    click.echo(text)
