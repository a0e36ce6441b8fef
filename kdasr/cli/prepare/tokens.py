"""``kdasr prepare tokens``: a char, BPE or phone token set (lang dir) from training transcripts."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import log_to


@click.command()
@click.option("--kind", required=True, type=click.Choice(["char", "bpe", "phone"]), help="Token kind.")
@click.option("--cuts", "cuts_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training cuts whose transcripts define the token set.")
@click.option("--lang-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output: tokens.txt, lang.yaml, bpe.model (bpe), lexicon.txt (phone).")
@click.option("--vocab-size", type=int, default=None, help="BPE vocabulary size, <blk> and <unk> included.")
@click.option("--model-type", type=click.Choice(["unigram", "bpe"]), default="unigram",
              help="Sentencepiece model type (bpe kind).")
@click.option("--lexicon", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="'WORD p1 p2 ...' lines (phone kind); the first pronunciation of a word is used.")
@click.option("--overwrite", is_flag=True, help="Rebuild even if LANG_DIR holds a token set already.")
def tokens(kind: str, cuts_path: Path, lang_dir: Path, vocab_size: Optional[int], model_type: str,
           lexicon: Optional[Path], overwrite: bool) -> None:
    """Build the token set of KIND in LANG_DIR (<blk> is id 0)."""
    from kdasr.data.tokenizer import build_lang, texts_from_cuts

    if kind == "bpe" and vocab_size is None:
        raise click.UsageError("--kind bpe needs --vocab-size")
    if kind == "phone" and lexicon is None:
        raise click.UsageError("--kind phone needs --lexicon")
    log_to(lang_dir, "tokens")
    tok = build_lang(kind, texts_from_cuts(cuts_path), lang_dir, vocab_size, model_type, lexicon, overwrite)
    logging.info("%s: %d tokens, hash %s", lang_dir, tok.vocab_size, tok.hash[:12])
