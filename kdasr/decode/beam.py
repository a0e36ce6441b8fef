"""CTC prefix beam search: torchaudio's flashlight decoder (CPU) and its CUDA decoder.

Three searches behind one call ``decoder(log_probs (B,T,V), lens (B,)) -> list[str]``:

- lexicon-free over tokens (no LM): the hypothesis is the best token
  sequence, turned into text by the tokenizer. On a CUDA device this runs
  torchaudio's ``cuda_ctc_decoder``.
- lexicon-constrained (the words of a ``kdasr graph`` directory, or of an
  ARPA file spelled by the tokenizer), with or without a word n-gram LM
  (KenLM, reading the ARPA file ``kdasr graph`` trained). Flashlight CPU only.

Flashlight's "silence" token is the word separator of char tokens (``▁``);
BPE pieces carry their own word boundary and phones have none, so for those
the blank plays the silence role. Flashlight sends a finished word back to
the trie root, where a repeat of its last token on the next frame is not
merged as CTC requires: a one-token word held over two frames would be
emitted twice, a longer one would pay a penalty. Spellings therefore end in
a closing token, as wav2letter lexicons end in ``|``, so that repeats of a
word's last token stay inside the word: for char tokens the separator
``▁``, which the model emits between words; for BPE and phones, which have
no such token, the blank, and each word keeps its plain spelling beside
the closed one, since two words may follow each other without a blank
between. One extra frame in which the closing token has probability 1
ends the last word of each utterance.

``lm_weight`` is the weight of the LM's natural-log probability, the unit
:class:`~kdasr.decode.wfst.WfstDecoder` uses, so one weight scan serves both;
flashlight's KenLM scores in log10, so it is given ``lm_weight * ln(10)``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from kdasr.data.tokenizer import BLANK, UNK, WORD_SEP
from kdasr.decode.graph import GraphError, arpa_words, check_graph, spell_words
from kdasr.utils.io import Pathlike, read_utf8

if TYPE_CHECKING:
    import torch

    from kdasr.data.tokenizer import Tokenizer


class CtcBeamDecoder:
    """CTC beam search with an optional lexicon and word LM.

    ``graph_dir``: a ``kdasr graph`` output; its ``lexicon.txt`` constrains
    the search to its words and, when ``lm`` is True, its ``G.arpa`` scores
    them. ``lm``: True (the graph's ARPA, if it has one), False/None (no LM),
    or the path of an ARPA / KenLM binary file; an ARPA file without a graph
    dir brings its own lexicon (its unigrams the tokenizer can spell).
    ``device``: ``cuda`` selects the CUDA decoder, which only searches
    lexicon-free without LM; with a lexicon the log-probs go to the CPU.
    """

    def __init__(
        self,
        tokenizer: "Tokenizer",
        graph_dir: Optional[Pathlike] = None,
        lm: Union[bool, Pathlike, None] = True,
        beam_size: int = 50,
        beam_size_token: Optional[int] = None,
        beam_threshold: float = 50.0,
        lm_weight: float = 1.0,
        word_score: float = 0.0,
        sil_score: float = 0.0,
        log_add: bool = False,
        nbest: int = 1,
        device: Union[str, "torch.device"] = "cpu",
        blank_skip_threshold: float = 0.95,
    ) -> None:
        import torch

        self.tokenizer = tokenizer
        self.nbest = nbest
        self.lm_path: Optional[Path] = None
        self.lexicon_path: Optional[Path] = None
        if graph_dir is not None:
            check_graph(graph_dir, tokenizer)
            self.lexicon_path = Path(graph_dir) / "lexicon.txt"
            if lm is True and (Path(graph_dir) / "G.arpa").is_file():
                self.lm_path = Path(graph_dir) / "G.arpa"
        if lm not in (True, False, None):
            self.lm_path = Path(lm)  # type: ignore[arg-type]
            if not self.lm_path.is_file():
                raise FileNotFoundError(f"LM file {self.lm_path} does not exist")
        # Lexicon search: spellings end in the closing token, and a final closing frame ends the last word.
        char_sep = tokenizer.kind == "char" and WORD_SEP in tokenizer.token_to_id
        self.closing_token = WORD_SEP if char_sep else BLANK
        self.lexicon = lexicon = self._lexicon()
        dev = torch.device(device)
        self.use_cuda = dev.type == "cuda" and lexicon is None
        if self.use_cuda:
            if not torch.cuda.is_available():
                raise RuntimeError("CtcBeamDecoder(device='cuda') needs a CUDA GPU; none is available (use device='cpu')")
            from torchaudio.models.decoder import cuda_ctc_decoder

            self.decoder = cuda_ctc_decoder(list(tokenizer.tokens), nbest=nbest, beam_size=beam_size,
                                            blank_skip_threshold=blank_skip_threshold)
            return
        if dev.type == "cuda":
            logging.info("lexicon beam search runs on the CPU (flashlight); log-probs are copied there")
        self._build_flashlight(lexicon, beam_size, beam_size_token, beam_threshold, lm_weight, word_score,
                               sil_score, log_add)

    def _lexicon(self) -> Optional[dict[str, list[list[str]]]]:
        """Word → spellings ending in the closing token, or None for lexicon-free search."""
        if self.lexicon_path is not None:
            lexicon: dict[str, list[list[str]]] = {}
            for line in read_utf8(self.lexicon_path).splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    lexicon.setdefault(parts[0], []).append(parts[1:])
            return self._closed(lexicon)
        if self.lm_path is not None:
            try:
                words = arpa_words(self.lm_path)
            except (UnicodeDecodeError, GraphError) as e:
                raise GraphError(f"{self.lm_path} is not an ARPA file: a binary KenLM needs graph_dir for its lexicon") from e
            spelled, dropped = spell_words(words, self.tokenizer)
            if dropped:
                logging.warning("%d words of %s cannot be spelled and are not searched, e.g. %s",
                                len(dropped), self.lm_path, dropped[:10])
            return self._closed({w: [s] for w, s in spelled})
        return None

    def _closed(self, lexicon: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
        """Spellings ending in the closing token, plus the plain ones when that token is the blank."""
        keep_open = self.closing_token == BLANK
        return {w: [s + [self.closing_token] for s in spellings] + (spellings if keep_open else [])
                for w, spellings in lexicon.items()}

    def _build_flashlight(self, lexicon: Optional[dict[str, list[list[str]]]], beam_size: int,
                          beam_size_token: Optional[int], beam_threshold: float, lm_weight: float,
                          word_score: float, sil_score: float, log_add: bool) -> None:
        """Assemble torchaudio's ``CTCDecoder`` from an in-memory lexicon (torchaudio's factory wants files)."""
        try:
            from flashlight.lib.text.decoder import (
                CriterionType,
                LexiconDecoderOptions,
                LexiconFreeDecoderOptions,
                ZeroLM,
            )
            from flashlight.lib.text.decoder.kenlm import KenLM
            from flashlight.lib.text.dictionary import Dictionary, create_word_dict
            from torchaudio.models.decoder._ctc_decoder import CTCDecoder
        except ImportError as e:
            raise RuntimeError("beam search on the CPU needs flashlight-text: pip install flashlight-text") from e

        tokens = list(self.tokenizer.tokens)
        tokens_dict = Dictionary(tokens)
        sil_token = self.closing_token
        n_tok = beam_size_token or len(tokens)
        fl_lm_weight = lm_weight * math.log(10.0)
        if lexicon is None:
            opts = LexiconFreeDecoderOptions(beam_size=beam_size, beam_size_token=n_tok, beam_threshold=beam_threshold,
                                             lm_weight=fl_lm_weight, sil_score=sil_score, log_add=log_add,
                                             criterion_type=CriterionType.CTC)
            word_dict = None
            lm = ZeroLM()
        else:
            opts = LexiconDecoderOptions(beam_size=beam_size, beam_size_token=n_tok, beam_threshold=beam_threshold,
                                         lm_weight=fl_lm_weight, word_score=word_score, unk_score=float("-inf"),
                                         sil_score=sil_score, log_add=log_add, criterion_type=CriterionType.CTC)
            # flashlight's word dictionary needs an <unk> entry (its default index); it has no spelling.
            lexicon = {**lexicon, UNK: []}
            word_dict = create_word_dict(lexicon)
            lm = KenLM(str(self.lm_path), word_dict) if self.lm_path is not None else ZeroLM()
        self.decoder = CTCDecoder(nbest=self.nbest, lexicon=lexicon, word_dict=word_dict, tokens_dict=tokens_dict,
                                  lm=lm, decoder_options=opts, blank_token=BLANK, sil_token=sil_token,
                                  unk_word=UNK)

    def hypotheses(self, log_probs: "torch.Tensor", lens: "torch.Tensor") -> list[list[tuple[str, float]]]:
        """Up to ``nbest`` ``(text, score)`` per utterance, best first."""
        import torch

        if log_probs.dim() != 3 or log_probs.shape[-1] != self.tokenizer.vocab_size:
            raise ValueError(f"log_probs must be (B, T, {self.tokenizer.vocab_size}), got {tuple(log_probs.shape)}")
        if self.use_cuda:
            lp = log_probs.detach().to("cuda", torch.float32).contiguous()
            hyps = self.decoder(lp, lens.detach().to("cuda", torch.int32))
            return [[(self.tokenizer.decode(h.tokens), float(h.score)) for h in utt] for utt in hyps]
        lp = log_probs.detach().to("cpu", torch.float32)
        lengths = lens.detach().to("cpu", torch.int32)
        if self.lexicon is not None:
            lp, lengths = self._append_closing_frame(lp, lengths)
        hyps = self.decoder(lp.contiguous(), lengths)
        out = []
        for utt in hyps:
            if self.lexicon is None:
                out.append([(self.tokenizer.decode(h.tokens.tolist()), float(h.score)) for h in utt])
            else:
                out.append([(" ".join(h.words), float(h.score)) for h in utt])
        return [u or [("", float("-inf"))] for u in out]

    def __call__(self, log_probs: "torch.Tensor", lens: "torch.Tensor") -> list[str]:
        return [utt[0][0] for utt in self.hypotheses(log_probs, lens)]

    def _append_closing_frame(self, lp: "torch.Tensor", lengths: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Put a frame where the closing token has log-prob 0 (all else -1e4) right after each utterance's last frame."""
        import torch

        B, T, V = lp.shape
        out = torch.full((B, T + 1, V), -1e4, dtype=torch.float32)
        out[:, :T] = lp
        close = self.tokenizer.token_to_id[self.closing_token]
        for b, n in enumerate(lengths.tolist()):
            out[b, n] = -1e4  # frame n may hold padding copied from lp
            out[b, n, close] = 0.0
        return out, lengths + 1
