"""lhotse recipes on a local copy of a corpus -> kdasr manifests."""
from __future__ import annotations

import difflib
import inspect
import logging
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from lhotse import (
    CutSet,
    Recording,
    RecordingSet,
    SupervisionSegment,
    SupervisionSet,
)
from lhotse.utils import fastcopy

from kdasr.data.errors import DataError
from kdasr.data.importers.common import (
    BAD_RECORDING,
    DUPLICATE_ID,
    EMPTY_TRANSCRIPT,
    NON_FINITE,
    SAMPLE_RATE,
    Problems,
    norm_text,
    settle,
    short_error,
    write_parts,
)
from kdasr.data.validate import (
    non_finite_in_file,
)
from kdasr.utils.io import Pathlike

# ----------------------------------------------------------------- lhotse recipes


def _part_name(keys: Sequence[str], default: str) -> str:
    """File-safe part name from (possibly nested) recipe keys: ('ihm', 'dev') -> 'ihm_dev'."""
    name = "_".join(str(k) for k in keys) or default
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _flatten_recipe_output(result: Any, recipe: str) -> dict[str, tuple[RecordingSet, SupervisionSet]]:
    """Part -> (recordings, supervisions) from a recipe's (possibly nested) dict of manifests."""
    if not isinstance(result, dict):
        raise DataError(f"lhotse recipe {recipe} returned {type(result).__name__}, expected a dict of manifests")
    out: dict[str, tuple[RecordingSet, SupervisionSet]] = {}

    def walk(node: Any, keys: list[str]) -> None:
        if isinstance(node, dict) and any(k in node for k in ("recordings", "audio", "supervisions")):
            recs = node.get("recordings", node.get("audio"))
            sups = node.get("supervisions")
            name = _part_name(keys, recipe)
            if recs is None or sups is None:
                raise DataError(f"lhotse recipe {recipe}, part {name}: recipe gave no recordings or no supervisions")
            out[name] = (recs, sups)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, keys + [str(k)])

    walk(result, [])
    return out


def _check_recipe_part(
    recordings: Iterable[Recording], supervisions: Iterable[SupervisionSegment], problems: Problems,
    sampling_rate: Optional[int], recipe: str,
) -> tuple[RecordingSet, SupervisionSet]:
    """Our checks on a recipe's manifests: duplicate ids, sample rate, empty text."""
    recs, sups = list(recordings), list(supervisions)
    where = f"lhotse recipe {recipe}, part {problems.part}"
    kept_recs = {}
    for rec_id, n in Counter(r.id for r in recs).items():
        if n > 1:
            problems.add(rec_id, DUPLICATE_ID, f"{where}: recording id {rec_id} appears {n} times")
    for rec in recs:
        if problems.has(rec.id):
            continue
        if sampling_rate is not None and rec.sampling_rate != sampling_rate:
            problems.add(
                rec.id, SAMPLE_RATE, f"{where}: recording {rec.id} is {rec.sampling_rate} Hz, expected {sampling_rate} Hz"
            )
            continue
        src = rec.sources[0]
        if len(rec.sources) == 1 and src.type == "file" and (bad := non_finite_in_file(src.source)):
            problems.add(rec.id, NON_FINITE, f"{where}: recording {rec.id} ({src.source}) holds {bad} NaN/Inf sample(s)")
            continue
        kept_recs[rec.id] = rec
    sup_counts = Counter(s.id for s in sups)
    kept_sups = []
    for sup in sups:
        if sup_counts[sup.id] > 1:
            if not problems.has(sup.id):
                problems.add(sup.id, DUPLICATE_ID, f"{where}: supervision {sup.id} appears {sup_counts[sup.id]} times")
            continue
        text = norm_text(sup.text)
        if sup.recording_id not in kept_recs:
            if problems.has(sup.recording_id):
                problems.add(sup.id, BAD_RECORDING, f"{where}: utterance {sup.id}: recording {sup.recording_id} rejected")
            continue  # a supervision without recording is dropped by lhotse's fix_manifests as well
        if not text:
            problems.add(sup.id, EMPTY_TRANSCRIPT, f"{where}: empty transcript for utterance {sup.id}")
            continue
        kept_sups.append(fastcopy(sup, text=text))
    return RecordingSet.from_recordings(kept_recs.values()), SupervisionSet.from_segments(kept_sups)


def import_lhotse_recipe(
    name: str,
    corpus_dir: Pathlike,
    out_dir: Pathlike,
    parts: Optional[Sequence[str]] = None,
    sampling_rate: Optional[int] = None,
    skip_bad: bool = False,
    **kwargs: Any,
) -> dict[str, CutSet]:
    """Run ``lhotse.recipes.prepare_<name>`` on a corpus already on disk and write our per-part files.

    Never downloads: only the recipe's ``prepare_`` function runs. Part names
    are the recipe's keys (``train-clean-100`` stays as it is; nested keys are
    joined with ``_``); ``parts`` keeps only those (and is passed on as
    ``dataset_parts`` where the recipe takes it). Extra ``kwargs`` go to the
    recipe. The recipe's own manifest files are not written (or go to a scratch
    dir that is removed). Audio the recipe cannot read stops the import with
    the recipe's error; ``skip_bad`` covers the checks done on its output.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if not corpus_dir.exists():
        raise DataError(f"corpus directory {corpus_dir} does not exist")
    import lhotse.recipes as recipes  # slow import: only when a recipe is used

    fn = getattr(recipes, f"prepare_{name}", None)
    if fn is None:
        known = sorted(n[len("prepare_") :] for n in dir(recipes) if n.startswith("prepare_"))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known recipes: {', '.join(known)}"
        raise ValueError(f"lhotse has no recipe {name!r}{hint}")
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        raise ValueError(f"prepare_{name} takes no option(s) {unknown}; it takes {list(params)[1:]}")
    call = dict(kwargs)
    if parts and "dataset_parts" in params and "dataset_parts" not in call:
        call["dataset_parts"] = list(parts)
    with tempfile.TemporaryDirectory(prefix="kdasr_recipe_") as scratch:
        if "output_dir" in params and "output_dir" not in call:
            call["output_dir"] = None if params["output_dir"].default is None else scratch
        logging.info("running lhotse prepare_%s on %s (%s)", name, corpus_dir, call)
        try:
            result = fn(corpus_dir, **call)
        except Exception as e:
            raise DataError(
                f"lhotse recipe prepare_{name} failed on {corpus_dir}: {type(e).__name__}: {short_error(e)}"
            ) from e
        # Materialise now: a recipe may return lazy manifests that read from the scratch dir.
        found = {
            part: (list(recs), list(sups)) for part, (recs, sups) in _flatten_recipe_output(result, name).items()
        }
    if parts:
        wanted = {_part_name([p], name): p for p in parts}
        missing = [p for k, p in wanted.items() if k not in found]
        if missing:
            raise DataError(
                f"lhotse recipe {name} gave no part(s) {missing} from {corpus_dir}; it gave {sorted(found) or 'none'}"
            )
        found = {k: v for k, v in found.items() if k in wanted}
    if not found:
        raise DataError(f"lhotse recipe {name} found no data parts in {corpus_dir}")
    checked = {}
    for part, (recs, sups) in found.items():
        problems = Problems(part)
        checked[part] = (*_check_recipe_part(recs, sups, problems, sampling_rate, name), problems)
    settle([p for _, _, p in checked.values()], out_dir, skip_bad)
    return write_parts(out_dir, checked)


