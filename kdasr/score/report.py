"""Collect every decode of a set of experiments into one results table and a plot.

Each ``kdasr decode`` leaves ``decode.yaml``; each ``kdasr train`` leaves
``config.yaml`` and ``train_summary.yaml``. The report reads only those, so it
can be rerun any time and never needs the models. Runs that differ only in
their seed (``<name>_seed<N>``) are merged into one row: mean WER and the
spread over seeds.
"""
from __future__ import annotations

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
    cond: dict = field(default_factory=lambda: defaultdict(list))
    rtf: dict = field(default_factory=lambda: defaultdict(list))
    order: int = 0


def _read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


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
                role=cfg.get("role", "teacher" if "teacher" in name else "student"),
                model=first.get("model", "?"),
                params=int(first.get("num_params", 0)),
                macs=float(first.get("macs_per_second", 0.0)),
                order=order,
            )
        row.seeds.append(m.group(1) if m else "-")
        if "train_seconds" in summary:
            row.train_seconds.append(float(summary["train_seconds"]))
        for path in decodes:
            d = _read_yaml(path)
            test = Path(d["cuts"]).name.split(".")[0].removeprefix("cuts_")
            key = (test, d["method"])
            row.wers[key].append(float(d["wer"]))
            row.rtf[key].append(float(d.get("rtf", 0.0)))
            for cond, w in (d.get("per_condition_wer") or {}).items():
                row.cond[(test, d["method"], str(cond))].append(float(w))
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
    out = "\n".join(lines) + "\n"
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


def plot_wer_vs_params(rows: list[Row], key: tuple[str, str], path: Path) -> None:
    """Scatter of WER against parameters for one (test set, method); teachers and students marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for role, marker, color in (("teacher", "s", "tab:red"), ("student", "o", "tab:blue")):
        pts = [(r.params, statistics.fmean(r.wers[key]), r.name) for r in rows if r.role == role and r.wers.get(key)]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=role, s=40)
            for x, y, n in pts:
                ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"WER % ({key[0]}, {key[1]})")
    ax.grid(True, alpha=0.3)
    ax.legend()
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
