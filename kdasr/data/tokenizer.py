"""Token sets for CTC: characters, sentencepiece BPE pieces, or phones from a lexicon.

A lang dir (``data/lang_<kind>/``) holds everything that defines the mapping
between text and token ids, so a model, a soft-label archive and a decoding
graph can check by :attr:`Tokenizer.hash` that they agree:

- ``tokens.txt``: ``<blk> 0`` first, then one ``symbol id`` line per token;
- ``lang.yaml``: the kind (``char``, ``bpe`` or ``phone``) and its options;
- ``bpe.model`` (BPE only): the sentencepiece model;
- ``lexicon.txt`` (phone only): ``WORD p1 p2 ...``, one pronunciation per word.

Id 0 is always the CTC blank. Char tokens spell each word letter by letter
with ``▁`` between words. Phone tokens have no word boundary, and
:meth:`Tokenizer.decode` of a phone system returns phones separated by spaces:
scoring a greedy phone decode therefore yields a phone error rate, not a WER.
"""
from __future__ import annotations

import abc
import io
import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import yaml

from kdasr.data.errors import DataError
from kdasr.utils.io import Pathlike, atomic_path, atomic_write_text, file_sha256, read_utf8

BLANK = "<blk>"
UNK = "<unk>"
WORD_SEP = "▁"
KINDS = ("char", "bpe", "phone")
BPE_MODEL_TYPES = ("unigram", "bpe")

# (utterance id, transcript) pairs, a mapping id -> transcript, or bare transcripts.
Texts = Union[Mapping[str, str], Iterable[Union[str, tuple[str, str]]]]

_MAX_LISTED = 10  # unknown symbols listed in an error message
_MAX_UTTS = 2  # utterance ids listed per unknown symbol


class LangError(DataError, ValueError):
    """A lang dir, lexicon or training text that cannot define a token set."""


class UnknownTokenError(DataError, ValueError):
    """Text holds words or characters that the token set cannot spell.

    ``unknown`` maps each unknown symbol to the utterance ids it occurs in
    (possibly empty), so the message can point at the data to fix.
    """

    def __init__(self, what: str, unknown: Mapping[str, Sequence[str]], where: str = "") -> None:
        self.what = what
        self.unknown: dict[str, list[str]] = {k: list(v) for k, v in unknown.items()}
        items = []
        for sym, utts in list(self.unknown.items())[:_MAX_LISTED]:
            shown = f"{sym!r}"
            if utts:
                more = f", +{len(utts) - _MAX_UTTS} more" if len(utts) > _MAX_UTTS else ""
                shown += f" (in {', '.join(utts[:_MAX_UTTS])}{more})"
            items.append(shown)
        rest = len(self.unknown) - _MAX_LISTED
        listing = ", ".join(items) + (f", and {rest} more" if rest > 0 else "")
        super().__init__(f"{len(self.unknown)} unknown {what}{' ' + where if where else ''}: {listing}")


def iter_texts(texts: Texts) -> Iterable[tuple[str, str]]:
    """Yield ``(utterance id, text)``; bare strings get ids ``#0``, ``#1``, ... (their index)."""
    items = texts.items() if isinstance(texts, Mapping) else texts
    for i, item in enumerate(items):
        if isinstance(item, str):
            yield f"#{i}", item
        else:
            utt, text = item
            yield str(utt), text


def texts_from_cuts(cuts: Union[Iterable, Pathlike]) -> list[tuple[str, str]]:
    """``(cut id, transcript)`` of every transcribed cut of a CutSet or manifest path.

    Untranscribed cuts are skipped: they carry no information about the token set;
    so are speed-perturbed copies (custom ``speed``, from ``kdasr prepare speed``),
    whose transcripts would count each sentence once per speed in a BPE model or an LM.
    """
    if isinstance(cuts, (str, Path)):
        from lhotse import load_manifest_lazy

        if not Path(cuts).is_file():
            raise LangError(f"cut manifest {cuts} does not exist")
        cuts = load_manifest_lazy(cuts)
    out = []
    for cut in cuts:
        if (getattr(cut, "custom", None) or {}).get("speed") is not None:
            continue
        text = " ".join(s.text.strip() for s in cut.supervisions if s.text and s.text.strip())
        if text:
            out.append((cut.id, text))
    return out


class Tokenizer(abc.ABC):
    """Maps transcripts to CTC token ids and back; build one with :meth:`from_dir`."""

    kind: str = ""
    blank_id: int = 0

    def __init__(self, lang_dir: Pathlike, tokens: list[str], options: dict) -> None:
        self.lang_dir = Path(lang_dir)
        self.tokens = tokens
        self.token_to_id = {t: i for i, t in enumerate(tokens)}
        self.options = options
        # SHA-256 of the files that define the mapping, taken when they are loaded;
        # checkpoints, soft-label archives and graphs record it.
        self.hash: str = file_sha256(*self.defining_files())

    # -- construction ---------------------------------------------------------------

    @staticmethod
    def from_dir(lang_dir: Pathlike) -> "Tokenizer":
        """Load the token set a ``kdasr prepare tokens`` run wrote to ``lang_dir``."""
        lang_dir = Path(lang_dir)
        yaml_path = lang_dir / "lang.yaml"
        if not yaml_path.is_file():
            raise LangError(f"{yaml_path} does not exist: run `kdasr prepare tokens` to build {lang_dir}")
        try:
            options = yaml.safe_load(yaml_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise LangError(f"{yaml_path} is not valid YAML: {e}") from e
        kind = options.get("kind") if isinstance(options, dict) else None
        if kind not in KINDS:
            raise LangError(f"{yaml_path}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
        tokens = read_tokens(lang_dir / "tokens.txt")
        cls = {"char": CharTokenizer, "bpe": BpeTokenizer, "phone": PhoneTokenizer}[kind]
        return cls(lang_dir, tokens, options)

    # -- the contract -----------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def defining_files(self) -> list[Path]:
        """Files whose bytes define the token set (subclasses add their model or lexicon)."""
        return [self.lang_dir / "tokens.txt", self.lang_dir / "lang.yaml"]

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of a transcript (words separated by whitespace)."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of a token id sequence; blanks are dropped, words separated by single spaces."""

    @abc.abstractmethod
    def lexicon_entry(self, word: str) -> list[str]:
        """Token symbols spelling ``word``: the L of a TLG graph."""

    def _symbols(self, ids: Iterable[int]) -> list[str]:
        """Token symbols of ``ids`` without blanks (decoders may pass un-collapsed paths)."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.blank_id:
                continue
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} is outside the vocabulary of {self.lang_dir} (size {self.vocab_size})")
            out.append(self.tokens[i])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.lang_dir)!r}, vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """Characters of the training text, with ``▁`` between words."""

    kind = "char"

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        unknown: dict[str, list[str]] = {}
        for n, word in enumerate(text.split()):
            if n > 0:
                ids.append(self.token_to_id[WORD_SEP])
            for ch in word:
                i = self.token_to_id.get(ch)
                if i is None or ch == WORD_SEP:
                    unknown.setdefault(ch, [])
                else:
                    ids.append(i)
        if unknown:
            raise UnknownTokenError("characters", unknown, f"in {text!r} (token set {self.lang_dir})")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join("".join(self._symbols(ids)).replace(WORD_SEP, " ").split())

    def lexicon_entry(self, word: str) -> list[str]:
        if not word or len(word.split()) != 1 or word != word.strip():
            raise ValueError(f"lexicon_entry needs one word, got {word!r}")
        unknown: dict[str, list[str]] = {ch: [] for ch in word if ch not in self.token_to_id or ch == WORD_SEP}
        if unknown:
            raise UnknownTokenError("characters", unknown, f"in word {word!r} (token set {self.lang_dir})")
        return list(word)


class BpeTokenizer(Tokenizer):
    """Sentencepiece pieces; characters unseen in training map to ``<unk>`` as sentencepiece does."""

    kind = "bpe"

    def __init__(self, lang_dir: Pathlike, tokens: list[str], options: dict) -> None:
        import sentencepiece as spm

        model_path = Path(lang_dir) / "bpe.model"
        if not model_path.is_file():
            raise LangError(f"{model_path} does not exist (lang.yaml says kind: bpe)")
        super().__init__(lang_dir, tokens, options)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        except (RuntimeError, OSError) as e:
            raise LangError(f"cannot load sentencepiece model {model_path}: {e}") from e
        pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        if pieces != tokens:
            raise LangError(f"{lang_dir}/tokens.txt does not match the pieces of {model_path}: rebuild the lang dir")

    def defining_files(self) -> list[Path]:
        return super().defining_files() + [self.lang_dir / "bpe.model"]

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(" ".join(text.split())))

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.sp.decode_pieces(self._symbols(ids)).split())

    def lexicon_entry(self, word: str) -> list[str]:
        if not word or word != word.strip() or len(word.split()) != 1:
            raise ValueError(f"lexicon_entry needs one word, got {word!r}")
        return list(self.sp.encode(word, out_type=str))


class PhoneTokenizer(Tokenizer):
    """Phones from ``lexicon.txt``; words are concatenated without a boundary token."""

    kind = "phone"

    def __init__(self, lang_dir: Pathlike, tokens: list[str], options: dict) -> None:
        self.lexicon = read_lexicon(Path(lang_dir) / "lexicon.txt")
        super().__init__(lang_dir, tokens, options)
        for word, phones in self.lexicon.items():
            bad = [p for p in phones if p not in self.token_to_id or p == BLANK]
            if bad:
                raise LangError(f"{lang_dir}/lexicon.txt: word {word!r} uses phones {bad} missing from tokens.txt")

    def defining_files(self) -> list[Path]:
        return super().defining_files() + [self.lang_dir / "lexicon.txt"]

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        unknown: dict[str, list[str]] = {}
        for word in text.split():
            phones = self.lexicon.get(word)
            if phones is None:
                unknown.setdefault(word, [])
            else:
                ids.extend(self.token_to_id[p] for p in phones)
        if unknown:
            raise UnknownTokenError("words", unknown, f"in {text!r} (lexicon {self.lang_dir}/lexicon.txt)")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Phones separated by spaces (no word boundaries are known)."""
        return " ".join(self._symbols(ids))

    def lexicon_entry(self, word: str) -> list[str]:
        phones = self.lexicon.get(word)
        if phones is None:
            raise UnknownTokenError("words", {word: []}, f"(lexicon {self.lang_dir}/lexicon.txt)")
        return list(phones)


# -- files ------------------------------------------------------------------------------


def read_tokens(path: Pathlike) -> list[str]:
    """Read ``tokens.txt``; ids must run 0..N-1 with ``<blk>`` at 0."""
    path = Path(path)
    if not path.is_file():
        raise LangError(f"{path} does not exist")
    by_id: dict[int, str] = {}
    for lineno, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise LangError(f"{path}:{lineno}: expected 'symbol id', got {line!r}")
        sym, i = parts[0], int(parts[1])
        if i in by_id:
            raise LangError(f"{path}:{lineno}: id {i} is given twice ({by_id[i]!r} and {sym!r})")
        by_id[i] = sym
    tokens = [by_id.get(i) for i in range(len(by_id))]
    if None in tokens:
        raise LangError(f"{path}: ids are not contiguous from 0 (missing {tokens.index(None)})")
    if not tokens or tokens[0] != BLANK:
        raise LangError(f"{path}: id 0 must be {BLANK}, got {tokens[0] if tokens else 'an empty file'!r}")
    if len(set(tokens)) != len(tokens):
        raise LangError(f"{path}: a symbol is listed twice")
    return tokens  # type: ignore[return-value]


def read_lexicon(path: Pathlike) -> "OrderedDict[str, list[str]]":
    """Read ``WORD p1 p2 ...`` lines; a word listed again keeps its first pronunciation."""
    path = Path(path)
    if not path.is_file():
        raise LangError(f"lexicon {path} does not exist")
    lexicon: OrderedDict[str, list[str]] = OrderedDict()
    for lineno, line in enumerate(read_utf8(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise LangError(f"{path}:{lineno}: word {parts[0]!r} has no phones")
        if BLANK in parts[1:]:
            raise LangError(f"{path}:{lineno}: {BLANK} is reserved for the CTC blank and cannot be a phone")
        lexicon.setdefault(parts[0], parts[1:])
    if not lexicon:
        raise LangError(f"lexicon {path} holds no entries")
    return lexicon


def _write_lang(lang_dir: Path, tokens: list[str], options: dict) -> None:
    """Write lang.yaml, then tokens.txt: a lang dir with tokens.txt is complete (recipes test for it)."""
    atomic_write_text(lang_dir / "lang.yaml", yaml.safe_dump(options, sort_keys=False, allow_unicode=True))
    atomic_write_text(lang_dir / "tokens.txt", "".join(f"{t} {i}\n" for i, t in enumerate(tokens)))


def _collect(texts: Texts) -> list[tuple[str, str]]:
    items = [(utt, " ".join(text.split())) for utt, text in iter_texts(texts)]
    items = [(utt, text) for utt, text in items if text]
    if not items:
        raise LangError("no transcribed utterances to build a token set from")
    return items


# -- builders ---------------------------------------------------------------------------


def build_char_lang(texts: Texts, lang_dir: Pathlike) -> Tokenizer:
    """Token set of the characters in ``texts`` (sorted, after ``<blk>`` and ``▁``)."""
    lang_dir = Path(lang_dir)
    items = _collect(texts)
    chars: set[str] = set()
    with_sep: list[str] = []
    for utt, text in items:
        chars.update(text.replace(" ", ""))
        if WORD_SEP in text:
            with_sep.append(utt)
    if with_sep:
        raise LangError(
            f"training text uses {WORD_SEP!r}, the word separator of char tokens "
            f"(utterances {', '.join(with_sep[:3])}): replace it in the transcripts"
        )
    tokens = [BLANK, WORD_SEP] + sorted(chars)
    _write_lang(lang_dir, tokens, {"kind": "char", "num_tokens": len(tokens)})
    logging.info("char token set of %d tokens from %d utterances -> %s", len(tokens), len(items), lang_dir)
    return Tokenizer.from_dir(lang_dir)


def build_bpe_lang(texts: Texts, lang_dir: Pathlike, vocab_size: int, model_type: str = "unigram") -> Tokenizer:
    """Train a sentencepiece model on ``texts`` with ``<blk>`` as id 0 and ``<unk>`` as id 1.

    ``vocab_size`` counts ``<blk>`` and ``<unk>``. Normalization is the
    identity, so decoding returns the text as the corpus spells it.
    """
    import sentencepiece as spm

    if model_type not in BPE_MODEL_TYPES:
        raise LangError(f"BPE model_type must be one of {', '.join(BPE_MODEL_TYPES)}, got {model_type!r}")
    if vocab_size < 3:
        raise LangError(f"BPE vocab size must be at least 3 (<blk>, <unk> and one piece), got {vocab_size}")
    lang_dir = Path(lang_dir)
    items = _collect(texts)
    with_blank = [utt for utt, t in items if BLANK in t]
    if with_blank:
        raise LangError(f"training text uses the reserved symbol {BLANK!r} (utterances {', '.join(with_blank[:3])})")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([t for _, t in items]),
            model_writer=buf,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            user_defined_symbols=[BLANK],
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            normalization_rule_name="identity",
            input_sentence_size=10_000_000,
            shuffle_input_sentence=True,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        n_chars = sum(len(t) for _, t in items)
        data = f"the training text ({len(items)} utterances, {n_chars} characters)"
        high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", msg)
        low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
        if high:
            raise LangError(
                f"BPE vocab size {vocab_size} is too large for {data}: sentencepiece ({model_type}) can make "
                f"at most {high.group(2)} tokens from it; use --vocab-size {high.group(2)} or less, or more text"
            ) from e
        if low:
            raise LangError(
                f"BPE vocab size {vocab_size} is too small for {data}: it holds {int(low.group(2)) - 2} distinct "
                f"characters, so the vocab needs at least {low.group(2)} tokens"
            ) from e
        raise LangError(
            f"sentencepiece could not train a {model_type} model of {vocab_size} tokens on {data}: {msg}"
        ) from e
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert tokens[0] == BLANK and tokens[1] == UNK, tokens[:2]
    with atomic_path(lang_dir / "bpe.model") as tmp:
        tmp.write_bytes(buf.getvalue())
    _write_lang(lang_dir, tokens, {"kind": "bpe", "vocab_size": vocab_size, "model_type": model_type})
    logging.info("%s BPE of %d tokens from %d utterances -> %s", model_type, len(tokens), len(items), lang_dir)
    return Tokenizer.from_dir(lang_dir)


def build_phone_lang(texts: Texts, lexicon_path: Pathlike, lang_dir: Pathlike) -> Tokenizer:
    """Phone token set from a lexicon; every word of ``texts`` must be in it.

    All words of the lexicon are kept (a decoding graph may use words beyond
    the training text); tokens are the phones the lexicon uses, sorted.
    """
    lang_dir = Path(lang_dir)
    lexicon = read_lexicon(lexicon_path)
    items = _collect(texts)
    missing: dict[str, list[str]] = {}
    for utt, text in items:
        for word in text.split():
            if word not in lexicon:
                utts = missing.setdefault(word, [])
                if not utts or utts[-1] != utt:
                    utts.append(utt)
    if missing:
        raise UnknownTokenError("words", missing, f"missing from the lexicon {lexicon_path}")
    phones = sorted({p for pron in lexicon.values() for p in pron})
    tokens = [BLANK] + phones
    atomic_write_text(lang_dir / "lexicon.txt", "".join(f"{w} {' '.join(p)}\n" for w, p in lexicon.items()))
    _write_lang(lang_dir, tokens, {"kind": "phone", "num_tokens": len(tokens), "num_words": len(lexicon)})
    logging.info("phone token set of %d tokens, %d lexicon words -> %s", len(tokens), len(lexicon), lang_dir)
    return Tokenizer.from_dir(lang_dir)


def build_lang(
    kind: str,
    texts: Texts,
    lang_dir: Pathlike,
    vocab_size: Optional[int] = None,
    model_type: str = "unigram",
    lexicon_path: Optional[Pathlike] = None,
    overwrite: bool = False,
) -> Tokenizer:
    """Build the token set of ``kind`` (the one call behind ``kdasr prepare tokens``).

    An existing lang dir built with the same options is kept as it is
    (rebuilding would change its hash and orphan models and archives made
    with it); one built with other options is an error unless ``overwrite``.
    """
    lang_dir = Path(lang_dir)
    if kind not in KINDS:
        raise LangError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "bpe" and vocab_size is None:
        raise LangError("a BPE token set needs a vocab size")
    if kind == "phone" and lexicon_path is None:
        raise LangError("a phone token set needs a lexicon file")
    if (lang_dir / "tokens.txt").is_file() and not overwrite:
        existing = Tokenizer.from_dir(lang_dir)
        wanted = {"kind": kind}
        if kind == "bpe":
            wanted.update(vocab_size=vocab_size, model_type=model_type)
        differ = {k: existing.options.get(k) for k, v in wanted.items() if existing.options.get(k) != v}
        same_lexicon = kind != "phone" or read_lexicon(lexicon_path) == getattr(existing, "lexicon", None)
        if not same_lexicon and "kind" not in differ:
            differ["lexicon"] = f"{lang_dir}/lexicon.txt differs from {lexicon_path}"
        if differ:
            raise LangError(f"{lang_dir} already holds another token set ({differ}); overwrite it to rebuild")
        logging.info("%s already holds this %s token set, keeping it (overwrite to rebuild)", lang_dir, kind)
        return existing
    if kind == "char":
        return build_char_lang(texts, lang_dir)
    if kind == "bpe":
        return build_bpe_lang(texts, lang_dir, vocab_size, model_type)  # type: ignore[arg-type]
    return build_phone_lang(texts, lexicon_path, lang_dir)  # type: ignore[arg-type]
