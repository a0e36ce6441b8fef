"""Corpus importers (a module each): Kaldi data dirs, TSV lists, lhotse recipes and Aurora-4 -> kdasr manifests.

Every importer writes, per data part, ``out_dir/{recordings,supervisions,cuts}_<part>.jsonl.gz``
and returns the CutSet(s). Each cut holds exactly one supervision spanning it
(cuts are trimmed to supervisions, so the cut id is the utterance id) and the
text is kept as the corpus spells it, whitespace-normalised.

Bad input (missing or unreadable audio, empty transcript, duplicate id,
sample-rate mismatch, ...) is collected over the whole input first. By default
the import then stops with a :class:`DataError` that names every bad
utterance/file; with ``skip_bad=True`` the bad entries are left out, counted in
a log warning and listed in ``out_dir/import_<part>.skipped.txt``. Manifests
are only written once every part has been built and validated, each file
atomically, so a failed import never leaves a half-written manifest.
"""
from kdasr.data.errors import DataError
from kdasr.data.importers.aurora4 import AURORA4_CONDITION_GROUPS, import_aurora4, normalize_wsj_transcript
from kdasr.data.importers.kaldi import import_kaldi_dir
from kdasr.data.importers.recipes import import_lhotse_recipe
from kdasr.data.importers.tsv import import_tsv

__all__ = [
    "DataError",
    "import_kaldi_dir",
    "import_tsv",
    "import_lhotse_recipe",
    "import_aurora4",
    "AURORA4_CONDITION_GROUPS",
    "normalize_wsj_transcript",
]
