"""Collect every decode of a set of experiments into one results table and a plot.

Each ``kdasr decode`` leaves ``decode.yaml``; each ``kdasr train`` leaves
``config.yaml`` (with the ``role`` the plan gave it) and ``train_summary.yaml``. The report reads only those, so it
can be rerun any time and never needs the models. Runs that differ only in
their seed (``<name>_seed<N>``) are merged into one row: mean WER and the
spread over seeds.

Per-condition WERs (``per_condition_wer`` of ``decode.yaml``, keyed by the
supervision field ``condition``) get a table of their own. When the test cuts
also carry ``condition_group`` (Aurora-4: A = 01, B = 02-07, C = 08,
D = 09-14), a group table comes first: each group's WER is the mean of its
conditions' WERs, as Aurora-4 results are reported (every condition holds the
same utterances), and ``avg`` is the mean over all conditions.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import yaml

from kdasr.utils.io import atomic_path, atomic_write_text

SEED_RE = re.compile(r"_seed(\d+)$")


@dataclass
class Row:
    name: str
    role: str
    model: str
    params: int
    macs: float
    train_seconds: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    # (test set, method) -> list of WERs over seeds
    wers: dict = field(default_factory=lambda: defaultdict(list))
    #: the same for CER, where decode.yaml has one (decodes older than it have none)
    cers: dict = field(default_factory=lambda: defaultdict(list))
    cond: dict = field(default_factory=lambda: defaultdict(list))
    # (test set, method, condition group) -> list of group WERs over seeds
    groups: dict = field(default_factory=lambda: defaultdict(list))
    # (test set, method) -> {condition: group}
    group_of: dict = field(default_factory=dict)
    rtf: dict = field(default_factory=lambda: defaultdict(list))
    order: int = 0
    #: trained with a ``kd`` section (a KD student), and on which view (from config.yaml)
    kd: bool = False
    view: Optional[str] = None


def _read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _cuts_file(cuts: str, exp: Path) -> Optional[Path]:
    """The decoded cuts manifest: as recorded (relative to the recipe dir, where decode ran) or below exp/.."""
    path = Path(cuts)
    for cand in (path, exp.parent.parent / path) if not path.is_absolute() else (path,):
        if cand.is_file():
            return cand
    return None


# (path, mtime) -> (condition -> group, whether the whole file was read)
_GROUP_CACHE: dict[tuple[str, float], tuple[dict[str, str], bool]] = {}


def condition_groups(cuts_path: Path, conditions: Iterable[str] = ()) -> dict[str, str]:
    """``condition -> condition_group`` from the supervisions of a cuts manifest (``{}`` when it has none).

    Reads the JSONL lines directly and stops once every condition in
    ``conditions`` is mapped, so a large test set costs little.
    """
    wanted = {str(c) for c in conditions}
    key = (str(cuts_path), cuts_path.stat().st_mtime)
    if key in _GROUP_CACHE:
        cached, complete = _GROUP_CACHE[key]
        if complete or (wanted and wanted <= set(cached)):
            return cached
    mapping: dict[str, str] = {}
    complete = True
    opener = gzip.open if cuts_path.suffix == ".gz" else open
    try:
        with opener(cuts_path, "rt", encoding="utf-8") as f:
            for line in f:
                for sup in json.loads(line).get("supervisions") or []:
                    custom = sup.get("custom") or {}
                    if "condition" in custom and "condition_group" in custom:
                        mapping.setdefault(str(custom["condition"]), str(custom["condition_group"]))
                if wanted and wanted <= set(mapping):
                    complete = False
                    break
    except (OSError, ValueError) as e:
        logging.warning("cannot read condition groups from %s: %s", cuts_path, e)
        return {}
    _GROUP_CACHE[key] = (mapping, complete)
    return mapping


def _add_groups(row: Row, test: str, method: str, per_cond: dict, cuts: str, exp: Path) -> None:
    """Group WERs (mean of the member conditions' WERs) of one decode, when its cuts name groups."""
    path = _cuts_file(cuts, exp)
    if path is None or not per_cond:
        return
    mapping = condition_groups(path, per_cond)
    known = {str(c): g for c, g in mapping.items() if str(c) in {str(k) for k in per_cond}}
    if not known:
        return
    row.group_of[(test, method)] = known
    members: dict = defaultdict(list)
    for cond, w in per_cond.items():
        if str(cond) in known:
            members[known[str(cond)]].append(float(w))
    for g, ws in members.items():
        row.groups[(test, method, g)].append(statistics.fmean(ws))
    row.groups[(test, method, "avg")].append(statistics.fmean(w for ws in members.values() for w in ws))


def _method_label(dir_name: str, test: str, method: str) -> str:
    """A decode's column: its method, or what its directory names after the test set when that says more
    (``decode_test_wb_beam_lm1`` -> ``beam_lm1``), so that two decodes of one model with other options
    are two columns, not two seeds."""
    rest = dir_name.removeprefix(f"decode_{test}_")
    return rest if rest != dir_name and rest.startswith(method) else method


def collect(exp_dirs: Iterable[Path]) -> list[Row]:
    """One Row per experiment name (seeds merged), in the order the directories were given."""
    rows: dict[str, Row] = {}
    for order, exp in enumerate(exp_dirs):
        exp = Path(exp)
        decodes = sorted(exp.glob("decode_*/decode.yaml"))
        if not decodes:
            continue
        cfg = _read_yaml(exp / "config.yaml") if (exp / "config.yaml").is_file() else {}
        summary = _read_yaml(exp / "train_summary.yaml") if (exp / "train_summary.yaml").is_file() else {}
        m = SEED_RE.search(exp.name)
        name = exp.name[: m.start()] if m else exp.name
        first = _read_yaml(decodes[0])
        row = rows.get(name)
        if row is None:
            row = rows[name] = Row(
                name=name,
                # as the plan recorded it; an ensemble decode names its members; "–" for runs outside a recipe
                role=str(cfg.get("role") or ("ensemble" if first.get("members") else "–")),
                model=first.get("model", "?"),
                params=int(first.get("num_params", 0)),
                macs=float(first.get("macs_per_second", 0.0)),
                order=order,
                kd=bool(cfg.get("kd")),
                view=cfg.get("view"),
            )
        row.seeds.append(m.group(1) if m else "-")
        if "train_seconds" in summary:
            row.train_seconds.append(float(summary["train_seconds"]))
        for path in decodes:
            d = _read_yaml(path)
            test = Path(d["cuts"]).name.split(".")[0].removeprefix("cuts_")
            method = _method_label(path.parent.name, test, str(d["method"]))
            key = (test, method)
            row.wers[key].append(float(d["wer"]))
            if "cer" in d:
                row.cers[key].append(float(d["cer"]))
            row.rtf[key].append(float(d.get("rtf", 0.0)))
            per_cond = d.get("per_condition_wer") or {}
            for cond, w in per_cond.items():
                row.cond[(test, method, str(cond))].append(float(w))
            _add_groups(row, test, method, per_cond, d["cuts"], exp)
    return sorted(rows.values(), key=lambda r: r.order)


def _fmt(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.pstdev(values):.2f}"


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def markdown_table(rows: list[Row], with_conditions: bool = True) -> str:
    """The results table: one row per experiment, one WER column per (test set, method)."""
    keys = sorted({k for r in rows for k in r.wers})
    head = ["experiment", "role", "model", "params", "MMACs/s", "train min", "seeds"]
    head += [f"{t} {m}" for t, m in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        train_min = _fmt([s / 60 for s in r.train_seconds]) if r.train_seconds else "–"
        cells = [r.name, r.role, r.model, _fmt_params(r.params), f"{r.macs / 1e6:.1f}", train_min, str(len(r.seeds))]
        cells += [_fmt(r.wers.get(k, [])) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n" + cer_table(rows, keys) + gap_table(rows)
    if with_conditions:
        out += _group_tables(rows)
    conds = sorted({k for r in rows for k in r.cond})
    if with_conditions and conds:
        by_test: dict = defaultdict(list)
        for t, m, c in conds:
            by_test[(t, m)].append(c)
        for (t, m), cs in sorted(by_test.items()):
            out += f"\nWER by condition on {t} ({m}):\n\n"
            out += "| experiment | " + " | ".join(cs) + " |\n|---|" + "---|" * len(cs) + "\n"
            for r in rows:
                if any((t, m, c) in r.cond for c in cs):
                    out += f"| {r.name} | " + " | ".join(_fmt(r.cond.get((t, m, c), [])) for c in cs) + " |\n"
    return out


def cer_table(rows: list[Row], keys: Sequence[tuple[str, str]]) -> str:
    """CER of the same decodes (characters of the words joined by spaces, spaces counted); empty without any."""
    shown = [r for r in rows if r.cers]
    if not shown:
        return ""
    lines = ["| experiment | " + " | ".join(f"{t} {m}" for t, m in keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {r.name} | " + " | ".join(_fmt(r.cers.get(k, [])) for k in keys) + " |" for r in shown]
    return "\nCER in % (the words joined by single spaces, spaces counted):\n\n" + "\n".join(lines) + "\n"


def gap_table(rows: list[Row]) -> str:
    """How much of the gap from the hard-label student to each ensemble every KD student closes.

    Hinton et al. (2015) report the share of an ensemble's gain over a single
    model that the distilled model keeps: ``(WER_hard - WER_kd) / (WER_hard -
    WER_ensemble)``. The hard-label student of a KD student is the student of
    the same model and view trained without ``kd``; only test sets and methods
    the ensemble was decoded on count, in any view (``test_wb`` for an ``nb``
    student of broadband teachers: the same utterances). Empty without an
    ensemble row.
    """
    views = sorted({r.view for r in rows if r.view}, key=len, reverse=True)

    def partition(test: str) -> str:
        """The test set without its view: ``test`` for ``test_wb`` and ``test_nb``."""
        return next((test[: -len(v) - 1] for v in views if test.endswith(f"_{v}")), test)

    # each ensemble's decodes by (test set without its view, method)
    ensembles = [(r, {(partition(t), m): (t, m) for t, m in r.wers}) for r in rows if r.role == "ensemble"]
    hard: dict = {}
    for r in rows:
        if r.role == "student" and not r.kd:
            hard.setdefault((r.model, r.view), r)
    lines = []
    for r in rows:
        base = hard.get((r.model, r.view))
        if r.role != "student" or not r.kd or base is None:
            continue
        for ens, by_part in ensembles:
            for key in sorted(set(r.wers) & set(base.wers)):
                ens_key = by_part.get((partition(key[0]), key[1]))
                if ens_key is None:
                    continue
                b, e, s = (statistics.fmean(x.wers[k]) for x, k in ((base, key), (ens, ens_key), (r, key)))
                closed = f"{100 * (b - s) / (b - e):.0f}%" if b > e else "– (ensemble not better)"
                where = "" if ens_key == key else f" on {ens_key[0]}"
                lines.append(f"| {r.name} | {key[0]} {key[1]} | {base.name} {b:.2f} | {ens.name}{where} {e:.2f} | "
                             f"{s:.2f} | {closed} |")
    if not lines:
        return ""
    return ("\nShare of the gap from the hard-label student to the ensemble that each KD student closes "
            "(Hinton et al. 2015):\n\n| KD student | test | hard-label student | ensemble | KD student | gap closed |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def _group_label(group: str, conds: list[str]) -> str:
    """``B (02-07)``: the group and the conditions it averages (a range when they are consecutive numbers)."""
    if not conds:
        return group
    if len(conds) == 1:
        return f"{group} ({conds[0]})"
    if all(c.isdigit() for c in conds) and [int(c) for c in conds] == list(range(int(conds[0]), int(conds[-1]) + 1)):
        return f"{group} ({conds[0]}-{conds[-1]})"
    return f"{group} ({', '.join(conds)})"


def _group_tables(rows: list[Row]) -> str:
    """One table per (test set, method) whose cuts carry condition groups: columns A, B, ..., avg."""
    out = ""
    tests = sorted({k for r in rows for k in r.group_of})
    for t, m in tests:
        members: dict = defaultdict(set)
        for r in rows:
            for c, g in r.group_of.get((t, m), {}).items():
                members[g].add(c)
        groups = sorted(members)
        labels = [_group_label(g, sorted(members[g])) for g in groups] + ["avg"]
        out += (f"\nWER by condition group on {t} ({m}; mean of the conditions' WERs):\n\n"
                "| experiment | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels) + "\n")
        for r in rows:
            if (t, m) in r.group_of:
                cells = [_fmt(r.groups.get((t, m, g), [])) for g in groups + ["avg"]]
                out += f"| {r.name} | " + " | ".join(cells) + " |\n"
    return out


def _spread(ys: list[float], gap: float) -> list[float]:
    """Label heights for points at ``ys`` (ascending), ``gap`` apart at least.

    Labels that would collide form a block centred on its points' mean;
    blocks that then collide merge, so a lone outlier keeps its label beside it.
    """
    blocks: list[list[float]] = []

    def bounds(b: list[float]) -> tuple[float, float]:
        c = sum(b) / len(b)
        return c - (len(b) - 1) * gap / 2, c + (len(b) - 1) * gap / 2

    for y in ys:
        blocks.append([y])
        while len(blocks) > 1 and bounds(blocks[-1])[0] < bounds(blocks[-2])[1] + gap:
            blocks[-2:] = [blocks[-2] + blocks[-1]]
    return [bounds(b)[0] + k * gap for b in blocks for k in range(len(b))]


def plot_wer_vs_params(rows: list[Row], key: tuple[str, str], path: Path) -> None:
    """Scatter of WER against parameters for one (test set, method); teachers and students marked.

    Models of one size share a column (every student is one CNN), so their
    names are stacked beside it, at least a line apart and as near their
    points as that allows, with a leader line when a name had to move.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r.params, statistics.fmean(r.wers[key]), r.name, r.role) for r in rows if r.wers.get(key)]
    columns: dict[int, list[tuple[float, str]]] = {}
    for x, y, n, _ in pts:
        columns.setdefault(x, []).append((y, n))
    fontsize = 7
    fig, ax = plt.subplots(figsize=(8, max(4.5, 1.5 + 0.16 * max((len(c) for c in columns.values()), default=0))))
    for role, marker, color in (("teacher", "s", "tab:red"), ("student", "o", "tab:blue")):
        mine = [p for p in pts if p[3] == role]
        if mine:
            ax.scatter([p[0] for p in mine], [p[1] for p in mine], marker=marker, color=color, label=role, s=40)
    ax.set_xscale("log")
    if pts:
        ax.set_xlim(min(p[0] for p in pts) / 1.3, max(p[0] for p in pts) * 2.5)
    lo, hi = ax.get_ylim()
    gap = (hi - lo) * (1.25 * fontsize / 72 * fig.dpi) / ax.get_window_extent().height
    top, bottom = hi, lo
    for x, col in columns.items():
        col.sort()
        for (y, n), ly in zip(col, _spread([y for y, _ in col], gap)):
            moved = abs(ly - y) > gap / 4
            ax.annotate(n, (x, y), xytext=(x * 1.08, ly), textcoords="data", fontsize=fontsize, va="center",
                        arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.6"} if moved else None)
            top, bottom = max(top, ly + gap), min(bottom, ly - gap)
    ax.set_ylim(bottom, top)
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"WER % ({key[0]}, {key[1]})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_report(exp_dirs: Sequence[Path], out_md: Path, plot: Optional[Path] = None,
                 plot_key: Optional[tuple[str, str]] = None, title: str = "Results") -> str:
    rows = collect(exp_dirs)
    if not rows:
        raise FileNotFoundError(f"no decode results (decode_*/decode.yaml) under {[str(p) for p in exp_dirs]}")
    table = markdown_table(rows)
    text = f"# {title}\n\nWER in %; mean ± std over seeds where several were run.\n\n{table}"
    if plot is not None:
        keys = sorted({k for r in rows for k in r.wers})
        key = plot_key if plot_key in keys else keys[0]
        plot_wer_vs_params(rows, key, plot)
        text += f"\n![WER vs parameters]({plot.name})\n"
    atomic_write_text(out_md, text)
    logging.info("wrote %s", out_md)
    return text
