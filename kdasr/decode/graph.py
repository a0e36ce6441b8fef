"""Decoding graphs for CTC models: TLG = T ∘ min(det(L ∘ G)), built without k2.

The recipe is Kaldi's ``mkgraph.sh`` / icefall's ``prepare_lang_fst.py`` with
the HMM replaced by a CTC topology, done with next-gen Kaldi's torch-free
packages: ``kaldingram`` trains a Kneser-Ney ARPA, ``kaldilm.arpa2fst`` turns it
into G (``#0`` on the input side of back-off arcs, ``<s>``/``</s>`` as
epsilons), ``kaldifst`` composes, determinizes and minimizes.

Label conventions (the contract with :mod:`kdasr.decode.wfst`):

- T's input labels are ``token id + 1``: label 0 is epsilon in an FST, and
  ``kaldi_decoder.DecodableCtc.log_likelihood(t, i)`` reads column ``i - 1``
  of the log-probs, so the blank (id 0) is input label 1.
- T's output labels, L's input labels and LG's input labels are token ids; the
  blank never leaves T (it outputs epsilon). Disambiguation symbols ``#0``,
  ``#1``... of L get token-side ids ``vocab_size``, ``vocab_size + 1``...
  and are turned into epsilons in LG before T is composed, so TLG's input side
  holds CTC labels only.
- Output labels of every graph are the word ids of ``words.txt``:
  ``<eps> 0``, ``<unk> 1``, the words sorted, then ``#0``, ``<s>``, ``</s>``.

Words of the LM that the token set cannot spell (a character missing from a
char token set, a word missing from a phone lexicon, a BPE spelling that needs
``<unk>``) are dropped from the lexicon with a warning naming them. In LM text
they are replaced by ``<unk>`` before training, so the sentences around them
still give their n-gram statistics; ``<unk>`` has no spelling, so that part of
the LM's probability mass is unreachable in LG and can never be decoded.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import kaldifst
import yaml

from kdasr.data.tokenizer import BLANK, UNK, WORD_SEP, Texts, Tokenizer, UnknownTokenError, iter_texts, texts_from_cuts
from kdasr.errors import KdasrError
from kdasr.utils.io import Pathlike, atomic_write_text, read_utf8

EPS = "<eps>"
BOS = "<s>"
EOS = "</s>"
DISAMBIG0 = "#0"
SPECIAL_WORDS = (EPS, UNK, DISAMBIG0, BOS, EOS)

# Bump when a change here would give a different TLG for the same inputs, so
# cached graphs built by older code are not reused.
GRAPH_VERSION = 2

_MAX_NAMED = 20  # dropped words named in a warning


class GraphError(KdasrError, ValueError):
    """Inputs that cannot make a decoding graph (no spellable word, a bad ARPA...)."""


# -- LM text and ARPA -----------------------------------------------------------------------


def read_lm_texts(path: Pathlike) -> list[str]:
    """Transcripts of a lhotse cut manifest (``*.jsonl[.gz]``) or the lines of a text file.

    One reader for both so the recipe can point ``--lm-text`` at the training
    cuts it already has, or at an external corpus of one sentence per line.
    """
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"LM text {path} does not exist")
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        from lhotse import CutSet

        return [text for _, text in texts_from_cuts(CutSet.from_file(path))]
    return [" ".join(line.split()) for line in read_utf8(path).splitlines() if line.strip()]


def train_arpa(texts: Iterable[str], out_path: Pathlike, order: int = 3) -> Path:
    """Train an unpruned back-off Kneser-Ney n-gram LM (SRILM ``-ukndiscount``) in ARPA format.

    Uses ``kaldingram``'s trainer in-process (no subprocess, no temp corpus
    file), with its progress bars silenced since a graph build is one log
    line. Empty lines are skipped: an empty sentence would only add ``<s> </s>``.
    """
    from kaldingram.train import NgramCounts

    if not 1 <= order <= 9:
        raise GraphError(f"n-gram order must lie in 1..9, got {order}")
    counts = NgramCounts(order)
    n = 0
    with contextlib.redirect_stderr(io.StringIO()):
        for text in texts:
            words = text.split()
            if not words:
                continue
            counts.add_raw_counts_from_line(" ".join(words))
            n += 1
        if n == 0:
            raise GraphError("no LM text: every line is empty")
        counts.cal_discounting_constants()
        counts.cal_f()
        counts.cal_bow()
        buf = io.StringIO()
        counts.print_as_arpa(fout=buf)
    atomic_write_text(out_path, buf.getvalue())
    logging.info("trained a %d-gram Kneser-Ney LM on %d sentences -> %s", order, n, out_path)
    return Path(out_path)


def arpa_words(arpa: Pathlike) -> list[str]:
    """The unigram vocabulary of an ARPA file, in file order."""
    words = []
    section = None
    with open(arpa, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                section = line
                if line == "\\2-grams:" or line == "\\end\\":
                    break
                continue
            if section == "\\1-grams:" and line:
                parts = line.split()
                if len(parts) < 2:
                    raise GraphError(f"{arpa}: bad unigram line {line!r}")
                words.append(parts[1])
    if not words:
        raise GraphError(f"{arpa} holds no unigrams: is it an ARPA file?")
    return words


# -- lexicon and symbol tables --------------------------------------------------------------


def spell_words(words: Iterable[str], tokenizer: Tokenizer) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Return ``(lexicon, dropped)``: the token spelling of each spellable word, and the others.

    A spelling is rejected when the tokenizer raises, when it is empty, or
    when it uses a symbol outside the token set, ``<blk>`` or (BPE) ``<unk>``:
    a word that only ``<unk>`` can spell would turn into any unknown sound.
    """
    known = set(tokenizer.tokens) - {BLANK, UNK}
    lexicon, dropped = [], []
    for word in words:
        if word in SPECIAL_WORDS or word.startswith("#"):
            continue
        try:
            spelling = tokenizer.lexicon_entry(word)
        except (UnknownTokenError, ValueError):
            dropped.append(word)
            continue
        if not spelling or any(t not in known for t in spelling):
            dropped.append(word)
        else:
            lexicon.append((word, list(spelling)))
    return lexicon, dropped


def add_disambig(lexicon: Sequence[tuple[str, list[str]]]) -> tuple[list[tuple[str, list[str]]], int]:
    """Append ``#1``, ``#2``... to spellings that are shared or a prefix of another (Kaldi's add_lex_disambig.pl).

    Without them L ∘ G is not determinizable: two words with one spelling
    would need the determinizer to emit two outputs for one input string.
    Returns the new lexicon and the highest disambiguation index used (0 when
    none was needed; ``#0`` is always reserved for G's back-off arcs).
    """
    count = Counter(tuple(s) for _, s in lexicon)
    prefixes = set()
    for spelling in count:
        for i in range(1, len(spelling)):
            prefixes.add(spelling[:i])
    last: dict[tuple[str, ...], int] = {}
    out = []
    max_disambig = 0
    for word, spelling in lexicon:
        key = tuple(spelling)
        if count[key] > 1 or key in prefixes:
            last[key] = last.get(key, 0) + 1
            max_disambig = max(max_disambig, last[key])
            out.append((word, list(spelling) + [f"#{last[key]}"]))
        else:
            out.append((word, list(spelling)))
    return out, max_disambig


def make_word_table(words: Iterable[str]) -> dict[str, int]:
    """``<eps> 0``, ``<unk> 1``, the distinct ``words`` sorted, then ``#0``, ``<s>``, ``</s>``."""
    table = {EPS: 0, UNK: 1}
    for w in sorted(set(words) - set(SPECIAL_WORDS)):
        table[w] = len(table)
    for w in (DISAMBIG0, BOS, EOS):
        table[w] = len(table)
    return table


def write_symbols(path: Pathlike, table: Mapping[str, int]) -> None:
    """Write a ``symbol id`` table (words.txt) in id order, the format arpa2fst and Kaldi read."""
    atomic_write_text(path, "".join(f"{s} {i}\n" for s, i in sorted(table.items(), key=lambda x: x[1])))


def read_symbols(path: Pathlike) -> dict[str, int]:
    """Read a ``symbol id`` table; decoders map output word ids back to words with it."""
    table = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            table[parts[0]] = int(parts[1])
    return table


# -- the FSTs -----------------------------------------------------------------------------


def _compile(lines: list[str]) -> kaldifst.StdVectorFst:
    """Compile AT&T text lines (first line's source = start state).

    Text plus ``kaldifst.compile`` is several times faster than one
    ``add_arc`` call per arc from Python.
    """
    return kaldifst.compile("\n".join(lines) + "\n", keep_state_numbering=True)


def build_T(num_tokens: int, blank: int = 0) -> kaldifst.StdVectorFst:
    """CTC topology: one state per last-seen token (state ``blank`` = after a blank, the start).

    Input ``token + 1`` (see the module notes), output the token when it
    starts a new emission and epsilon otherwise. A token repeated on adjacent
    frames is one emission (self-loop with epsilon output); two emissions of
    the same token need a blank between them, exactly CTC's collapse rule.
    Every state is final. ``num_tokens ** 2`` arcs, like k2's standard topo.
    """
    if not 0 <= blank < num_tokens:
        raise GraphError(f"blank id {blank} outside 0..{num_tokens - 1}")
    lines = []
    order = [blank] + [t for t in range(num_tokens) if t != blank]  # start state first
    for i in order:
        for j in range(num_tokens):
            out = 0 if j == i or j == blank else j
            lines.append(f"{i} {j} {j + 1} {out}")
    lines.extend(str(i) for i in order)
    return _compile(lines)


@dataclass
class LexiconFst:
    """L with disambiguation symbols, and what building it decided."""

    fst: kaldifst.StdVectorFst
    lexicon: list[tuple[str, list[str]]]  # word -> spelling, without disambiguation symbols
    dropped: list[str]  # words of the table the tokenizer cannot spell
    first_disambig: int  # token-side id of #0; #k is first_disambig + k
    num_disambig: int  # how many: #0..#(num_disambig - 1)


def build_L(words: Mapping[str, int], tokenizer: Tokenizer) -> LexiconFst:
    """Lexicon transducer (token ids → word ids) with disambiguation symbols.

    BPE and phone spellings follow each other directly, so L is Kaldi's
    single-state word loop. Char spellings need the ``▁`` between words that
    the tokenizer puts there, and only there: L has a word-start state (start,
    final: the empty sentence) and a word-end state (final) that goes back to
    word start on ``▁``. A trailing ``▁`` is accepted, a leading one is not (a
    model trained on these targets never emits one). ``#0:#0`` self-loops sit
    on the final states and on those with word-emitting arcs, as Kaldi's
    ``fstaddselfloops`` puts them, so G's back-off arcs can pass through.
    """
    spellable, dropped = spell_words(words, tokenizer)
    if not spellable:
        raise GraphError(f"none of the {len(dropped)} words can be spelled with the tokens of {tokenizer.lang_dir}")
    lexicon, max_disambig = add_disambig(spellable)
    first_disambig = tokenizer.vocab_size
    tok = dict(tokenizer.token_to_id)
    for k in range(max_disambig + 1):
        tok[f"#{k}"] = first_disambig + k
    word0 = words[DISAMBIG0]
    sep = tok.get(WORD_SEP) if tokenizer.kind == "char" else None
    start, end = 0, (1 if sep is not None else 0)
    next_state = end + 1
    lines = []
    for word, spelling in lexicon:
        src = start
        for n, sym in enumerate(spelling):
            last = n == len(spelling) - 1
            dst = end if last else next_state
            if not last:
                next_state += 1
            lines.append(f"{src} {dst} {tok[sym]} {words[word] if n == 0 else 0}")
            src = dst
    lines.append(f"{start} {start} {first_disambig} {word0}")
    lines.append(str(start))
    if sep is not None:
        lines.append(f"{end} {start} {sep} 0")
        lines.append(f"{end} {end} {first_disambig} {word0}")
        lines.append(str(end))
    return LexiconFst(_compile(lines), spellable, dropped, first_disambig, max_disambig + 1)


def build_G(arpa: Pathlike, words: Union[Pathlike, Mapping[str, int]]) -> kaldifst.StdVectorFst:
    """G from an ARPA file with ``kaldilm.arpa2fst`` (``#0`` on back-off arcs, ``<s>``/``</s>`` → epsilon).

    ``words`` is ``words.txt`` or a table to write to one (arpa2fst reads a
    file); every ARPA word must be in it.
    """
    import kaldilm

    with tempfile.TemporaryDirectory(prefix="kdasr_G_") as tmp:
        if isinstance(words, Mapping):
            words_path = Path(tmp) / "words.txt"
            write_symbols(words_path, words)
        else:
            words_path = Path(words)
            words = read_symbols(words_path)
        missing = [w for w in arpa_words(arpa) if w not in words]
        if missing:
            raise GraphError(f"{len(missing)} ARPA words are not in the word table, e.g. {missing[:5]}")
        out = Path(tmp) / "G.fst"
        kaldilm.arpa2fst(
            input_arpa=str(arpa),
            output_fst=str(out),
            disambig_symbol=DISAMBIG0,
            read_symbol_table=str(words_path),
            max_arpa_warnings=-1 if logging.getLogger().isEnabledFor(logging.DEBUG) else 0,
        )
        return kaldifst.StdVectorFst.read(str(out))


def build_uniform_G(words: Mapping[str, int]) -> kaldifst.StdVectorFst:
    """One-state word loop, every real word at cost ``log(#words)``: a grammar with no preference.

    Used in tests (decoding then follows the acoustics among lexicon words)
    and as an LM-free baseline.
    """
    ids = [i for w, i in words.items() if w not in SPECIAL_WORDS]
    if not ids:
        raise GraphError("the word table holds no words")
    cost = math.log(len(ids))
    lines = [f"0 0 {i} {i} {cost:.6f}" for i in sorted(ids)]
    lines.append("0")
    return _compile(lines)


def _relabel_input(fst: kaldifst.StdVectorFst, first: int) -> kaldifst.StdVectorFst:
    """Copy of ``fst`` with input labels ``>= first`` (disambiguation symbols) set to epsilon."""
    lines = []
    for line in fst.to_str().splitlines():
        parts = line.split()
        if len(parts) >= 4 and int(parts[2]) >= first:
            parts[2] = "0"
        lines.append(" ".join(parts))
    return _compile(lines)


def fst_size(fst: kaldifst.StdVectorFst) -> dict[str, int]:
    """States and arcs, recorded in graph.yaml so graph growth with the LM is visible without tools."""
    return {"states": fst.num_states, "arcs": sum(fst.num_arcs(s) for s in range(fst.num_states))}


def compose_TLG(
    T: kaldifst.StdVectorFst, L: kaldifst.StdVectorFst, G: kaldifst.StdVectorFst, first_disambig: int
) -> tuple[kaldifst.StdVectorFst, kaldifst.StdVectorFst]:
    """Return ``(TLG, LG)``: LG = min(det(L ∘ G)) with disambiguation symbols → ε, then T ∘ LG.

    Determinization runs with the disambiguation symbols in place (they are
    what makes L ∘ G determinizable); they are removed afterwards, as
    icefall's CTC graphs do, rather than carried through T with self-loops as
    in Kaldi's HCLG. TLG is not determinized again: the CTC topology's blank
    and repeat loops make that pointless for a Viterbi decoder.
    """
    L = L.copy()
    kaldifst.arcsort(L, sort_type="olabel")  # kaldifst.compose matches on the left FST's output side
    LG = kaldifst.compose(L, G)
    if LG.num_states == 0:
        raise GraphError("L ∘ G is empty: the LM accepts no sentence of spellable words")
    if kaldifst.determinize_star(LG):
        raise GraphError("determinizing L ∘ G stopped early")
    kaldifst.minimize_encoded(LG)
    LG = _relabel_input(LG, first_disambig)
    kaldifst.arcsort(LG, sort_type="ilabel")
    T = T.copy()
    kaldifst.arcsort(T, sort_type="olabel")  # compose matches on the left FST's output side
    TLG = kaldifst.compose(T, LG)
    kaldifst.connect(TLG)
    kaldifst.arcsort(TLG, sort_type="ilabel")
    return TLG, LG


# -- the cached build ---------------------------------------------------------------------


def _normalized(texts: Optional[Texts]) -> list[str]:
    if texts is None:
        return []
    if isinstance(texts, (str, os.PathLike)):
        return read_lm_texts(texts)
    return [" ".join(t.split()) for _, t in iter_texts(texts) if t.split()]


def graph_hash(tokenizer: Tokenizer, lines: list[str], arpa: Optional[Pathlike], order: int, uniform: bool) -> str:
    """SHA-256 of everything the graph depends on: the lang files, the LM source and the options."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": GRAPH_VERSION, "lang": tokenizer.hash, "uniform": uniform,
                         "order": None if (uniform or arpa) else order}, sort_keys=True).encode())
    if arpa is not None:
        h.update(b"arpa\0" + Path(arpa).read_bytes())
    else:
        h.update(b"text\0" + "\n".join(lines).encode("utf-8"))
    return h.hexdigest()


def build_graph(
    lang_dir: Pathlike,
    texts: Optional[Texts],
    order: int = 3,
    arpa: Optional[Pathlike] = None,
    uniform: bool = False,
) -> Path:
    """Build (or find cached) ``lang_dir/graph_<hash>/`` and return its path.

    ``texts`` are LM sentences (strings, ``(id, text)`` pairs, or a path to
    cuts / a text file). The LM is, in order of precedence: ``arpa`` (used as
    given; ``texts`` may be None), a uniform word loop over the words of
    ``texts`` (``uniform=True``), or a Kneser-Ney ``order``-gram trained on
    ``texts``. The directory holds ``TLG.fst``, ``words.txt``, ``tokens.txt``,
    ``lexicon.txt`` (word spellings, for lexicon beam search), ``G.arpa`` (not
    for a uniform G) and ``graph.yaml`` (written last). It is named by a hash
    of the lang files, the LM source and the options, so the same inputs
    return the existing directory at once; it is built in a temporary
    directory and renamed into place, so a killed build leaves nothing a
    later run would trust.
    """
    lang_dir = Path(lang_dir)
    tokenizer = Tokenizer.from_dir(lang_dir)
    if arpa is not None and uniform:
        raise GraphError("give either an ARPA LM or uniform=True, not both")
    if arpa is not None and not Path(arpa).is_file():
        raise GraphError(f"ARPA file {arpa} does not exist")
    lines = _normalized(texts) if arpa is None else []
    if arpa is None and not lines:
        raise GraphError("no LM text given (and no ARPA file)")
    digest = graph_hash(tokenizer, lines, arpa, order, uniform)
    final = lang_dir / f"graph_{digest[:16]}"
    if (final / "graph.yaml").is_file():
        logging.info("graph for these inputs exists: %s", final)
        return final

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=lang_dir))
    try:
        if arpa is not None:
            vocab = arpa_words(arpa)
        else:
            vocab = sorted({w for line in lines for w in line.split()})
        lexicon, dropped = spell_words(vocab, tokenizer)
        if dropped:
            named = ", ".join(repr(w) for w in dropped[:_MAX_NAMED])
            more = f" and {len(dropped) - _MAX_NAMED} more" if len(dropped) > _MAX_NAMED else ""
            logging.warning("%d LM words cannot be spelled with the tokens of %s and are left out of the lexicon%s: %s%s",
                            len(dropped), lang_dir, "" if arpa else " (mapped to <unk> in the LM text)",
                            named, more)
        if arpa is not None:
            words = make_word_table(vocab)  # arpa2fst needs every ARPA word in the table
            shutil.copyfile(arpa, tmp / "G.arpa")
        else:
            spellable = {w for w, _ in lexicon}
            words = make_word_table(spellable)
            if not uniform:
                drop = set(dropped)
                lm_lines = [" ".join(UNK if w in drop else w for w in line.split()) for line in lines]
                train_arpa(lm_lines, tmp / "G.arpa", order)
        write_symbols(tmp / "words.txt", words)
        shutil.copyfile(lang_dir / "tokens.txt", tmp / "tokens.txt")
        L = build_L(words, tokenizer)
        atomic_write_text(tmp / "lexicon.txt", "".join(f"{w} {' '.join(s)}\n" for w, s in L.lexicon))
        G = build_uniform_G(words) if uniform else build_G(tmp / "G.arpa", tmp / "words.txt")
        T = build_T(tokenizer.vocab_size, tokenizer.blank_id)
        TLG, LG = compose_TLG(T, L.fst, G, L.first_disambig)
        if TLG.num_states == 0:
            raise GraphError("TLG is empty")
        TLG.write(str(tmp / "TLG.fst"))
        info = {
            "version": GRAPH_VERSION,
            "hash": digest,
            "lang_dir": str(lang_dir),
            "lang_hash": tokenizer.hash,
            "kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "lm": "uniform" if uniform else ("arpa" if arpa is not None else f"{order}-gram Kneser-Ney on text"),
            "arpa_source": str(arpa) if arpa is not None else None,
            "order": None if (uniform or arpa is not None) else order,
            "lm_sentences": len(lines),
            "lexicon_words": len(L.lexicon),
            "dropped_words": len(dropped),
            "dropped_examples": dropped[:_MAX_NAMED],
            "disambig_symbols": L.num_disambig,
            "G": fst_size(G),
            "LG": fst_size(LG),
            "TLG": fst_size(TLG),
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        atomic_write_text(tmp / "graph.yaml", yaml.safe_dump(info, sort_keys=False, allow_unicode=True))
        if final.exists() and not (final / "graph.yaml").is_file():
            # Not a build in progress (those live in temp dirs until complete): a leftover someone made by hand.
            logging.warning("removing %s: it has no graph.yaml", final)
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "graph.yaml").is_file():  # not a concurrent build of the same graph
                raise
            logging.info("a concurrent build wrote %s first; using it", final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logging.info("graph %s: %d words, TLG %d states / %d arcs (%.1f s)", final, len(L.lexicon),
                 info["TLG"]["states"], info["TLG"]["arcs"], info["build_seconds"])
    return final


def load_graph_info(graph_dir: Pathlike) -> dict:
    """``graph.yaml`` of a built graph; raises if the directory is not a complete graph."""
    path = Path(graph_dir) / "graph.yaml"
    if not path.is_file():
        raise GraphError(f"{graph_dir} is not a built graph (no graph.yaml): run `kdasr graph`")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check_graph(graph_dir: Pathlike, tokenizer: Tokenizer) -> dict:
    """``graph.yaml`` of ``graph_dir`` once it is known to be a complete graph of ``tokenizer``'s token set.

    Decoders call it before any decoding, so a missing graph or one built
    for another token set is one line naming both, not a wrong result.
    """
    graph_dir = Path(graph_dir)
    if not (graph_dir / "graph.yaml").is_file() or not (graph_dir / "TLG.fst").is_file():
        raise GraphError(f"{graph_dir} is not a built graph (no graph.yaml or TLG.fst) for the tokens of "
                         f"{tokenizer.lang_dir}: run `kdasr graph`")
    info = load_graph_info(graph_dir)
    if info.get("lang_hash") != tokenizer.hash:
        raise GraphError(f"graph {graph_dir} was built for another token set than {tokenizer.lang_dir} "
                         "(lang hash differs): rebuild it with `kdasr graph`")
    return info


def read_word_list(path: Pathlike) -> list[str]:
    """``words.txt`` as a list indexed by word id (ids without a word map to ``<eps>``)."""
    table = read_symbols(path)
    words = [EPS] * (max(table.values()) + 1)
    for w, i in table.items():
        words[i] = w
    return words
