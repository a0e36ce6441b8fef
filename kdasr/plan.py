"""The experiment plan of a recipe: who trains when, on which view, reading whose outputs.

An experiments file holds one experiment a line::

    name  role  view  config.yaml [config.yaml ...] [key=value ...]

``role`` is ``teacher`` or ``student`` (the results table's column), ``view``
``wb`` or ``nb``. From that file and the configs it names, :func:`make_plan`
works out everything the recipe shell used to guess from config text:

- the resolved config of each experiment (files merged in order, the line's
  overrides, the recipe's, then the data paths of its view, its seed, view
  and role): what ``kdasr train`` gets;
- which other experiments it reads: any path in its config under
  ``<exp-dir>/<other>/`` (a soft-label archive under ``softlabels``, any
  other file, e.g. a checkpoint, once ``<other>`` is trained). A KD teacher
  given by ``name`` alone reads ``<exp-dir>/<name>/softlabels``; one with
  ``checkpoint: best.pt`` runs ``<exp-dir>/<name>/best.pt`` online, on the
  cuts of its ``view`` when that is given;
- its stage: 4 for teachers and for whatever a teacher reads (e.g. the
  hard-label student that guides a Guided-CTC teacher), 6 for the other
  students;
- whether its soft labels are dumped (teachers, and anything whose archive
  another experiment reads);
- its seeds: a student is trained once per seed (``<name>_seed<N>`` when
  there are several) unless others read it; a line named ``<name>_seed<N>``
  trains once with seed N.

Config paths that do not exist relative to the recipe dir are looked up in
the shared config dirs (``recipes/``: ``conf/kd/*.yaml``), so a corpus's
``conf/`` holds only what differs. The recipe shell runs the plan: it starts
any experiment whose dependencies are met, in plan order among those ready.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping, Optional, Sequence

import yaml

from kdasr.config import ConfigError, load_config, parse_override, set_dotted, yaml_load
from kdasr.data.features import VIEWS, cmvn_file, fbank_manifest
from kdasr.utils.io import Pathlike, atomic_write_text

ROLES = ("teacher", "student")
SEED_RE = re.compile(r"_seed(\d+)$")
ARCHIVE_DIR = "softlabels"
TEACHER_STAGE, STUDENT_STAGE = 4, 6
TSV_COLUMNS = ("name", "role", "view", "seed", "stage", "deps", "archived", "config")


def default_shared() -> list[Path]:
    """The ``recipes/`` dir of a source checkout (beside the package), where the shared configs are."""
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    return [recipes] if (recipes / "conf").is_dir() else []


class PlanError(ConfigError):
    """An experiments file or config that cannot be planned (names the file and line)."""


@dataclass(frozen=True)
class Line:
    """One experiment as listed, before seeds are expanded."""

    name: str
    role: str
    view: str
    configs: tuple[Path, ...]
    overrides: tuple[str, ...]
    where: str  # "file:line" for messages


@dataclass(frozen=True)
class DataLayout:
    """Where a recipe's prepared data lives; gives each view's training inputs."""

    data_dir: str = "data"
    train_part: str = "train"
    dev_part: str = "dev"
    lang_dir: str = "data/lang_char"

    def overrides(self, view: str) -> list[tuple[str, str]]:
        fbank = f"{self.data_dir}/fbank"
        return [
            ("data.train_cuts", str(fbank_manifest(fbank, self.train_part, view))),
            ("data.dev_cuts", str(fbank_manifest(fbank, self.dev_part, view))),
            ("data.cmvn", str(cmvn_file(fbank, view))),
            ("data.lang_dir", self.lang_dir),
        ]


@dataclass
class Step:
    """One experiment of the plan (one seed of a listed line)."""

    name: str
    role: str
    view: str
    seed: Optional[int]
    stage: Optional[int]  # None: not listed, trained by an earlier run and only read here
    deps: dict[str, str] = field(default_factory=dict)  # other experiment -> "archive" | "trained"
    archived: bool = False
    config: dict = field(default_factory=dict)
    sources: tuple[str, ...] = ()  # the config files and overrides it was resolved from

    def deps_text(self) -> str:
        return ",".join(f"{d}={k}" for d, k in self.deps.items()) or "-"


def _find_config(word: str, base: Path, shared: Sequence[Path], where: str) -> Path:
    path = Path(word)
    if path.is_absolute() or (base / path).is_file():
        return path if path.is_absolute() else base / path
    for d in shared:
        if (Path(d) / path).is_file():
            return Path(d) / path
    looked = ", ".join(str(p) for p in [base, *shared])
    raise PlanError(f"{where}: config {word} not found (looked in {looked})")


def read_experiments(path: Pathlike, shared: Sequence[Pathlike] = (), base: Pathlike = ".") -> list[Line]:
    """The lines of an experiments file; config paths resolved against ``base``, then ``shared``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PlanError(f"cannot read experiments file {path}: {e}") from e
    lines: list[Line] = []
    for no, raw in enumerate(text.splitlines(), 1):
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{path}:{no}"
        if len(words) < 4:
            raise PlanError(f"{where}: expected 'name role view config.yaml ...', got {raw.strip()!r}")
        name, role, view, rest = words[0], words[1], words[2], words[3:]
        if role not in ROLES:
            raise PlanError(f"{where}: role {role!r} of {name} is not one of {', '.join(ROLES)}")
        if view not in VIEWS:
            raise PlanError(f"{where}: view {view!r} of {name} is not one of {', '.join(VIEWS)}")
        files = tuple(_find_config(w, Path(base), [Path(s) for s in shared], where) for w in rest if "=" not in w)
        if not files:
            raise PlanError(f"{where}: {name} names no config file")
        lines.append(Line(name, role, view, files, tuple(w for w in rest if "=" in w), where))
    if not lines:
        raise PlanError(f"experiments file {path} lists no experiment")
    return lines


def _walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for v in node.values():
            yield from _walk_strings(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _walk_strings(v)


def _fill_teachers(cfg: dict, exp_dir: str, layout: DataLayout) -> None:
    """Complete the ``kd.teachers`` entries a recipe writes by name.

    A teacher named without ``archive`` or ``checkpoint`` reads its experiment's archive,
    ``<exp_dir>/<name>/softlabels``; a bare ``checkpoint`` file name (``best.pt``) is its experiment's
    file, ``<exp_dir>/<name>/best.pt`` (online KD); ``view: wb`` becomes ``cuts``, the training cuts of
    that view, which an online teacher of another view than the student reads.
    """
    teachers = (cfg.get("kd") or {}).get("teachers") if isinstance(cfg.get("kd"), Mapping) else None
    for t in teachers or []:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            continue
        ckpt = t.get("checkpoint")
        if isinstance(ckpt, str) and "/" not in ckpt:
            t["checkpoint"] = f"{exp_dir}/{t['name']}/{ckpt}"
        elif "archive" not in t and not ckpt:
            t["archive"] = f"{exp_dir}/{t['name']}/{ARCHIVE_DIR}"
        view = t.pop("view", None)
        if view is not None:
            if view not in VIEWS:
                raise PlanError(f"kd.teachers: view {view!r} of {t['name']} is not one of {', '.join(VIEWS)}")
            t["cuts"] = dict(layout.overrides(view))["data.train_cuts"]


def reads(cfg: Mapping, exp_dir: str) -> dict[str, str]:
    """The experiments whose outputs a resolved config reads: ``name -> "archive" | "trained"``."""
    root = PurePosixPath(exp_dir).parts
    found: dict[str, str] = {}
    for value in _walk_strings(cfg):
        parts = PurePosixPath(value).parts
        if len(parts) <= len(root) or parts[: len(root)] != root:
            continue
        name, below = parts[len(root)], parts[len(root) + 1: len(root) + 2]
        kind = "archive" if below == (ARCHIVE_DIR,) else "trained"
        if found.get(name) != "archive":
            found[name] = kind
    return found


def resolve(line: Line, seed: int, exp_dir: str, layout: DataLayout,
            overrides: Sequence[str] = ()) -> dict:
    """The config ``kdasr train`` gets for one seed of ``line``.

    The data layout fills in each view's inputs over the config files; the line's and the caller's
    overrides come last, so ``data.train_cuts=...`` on a line trains that experiment on other cuts.
    """
    try:
        cfg = load_config(line.configs)
        for key, value in layout.overrides(line.view):
            set_dotted(cfg, key.split("."), value)
        for item in [*line.overrides, *overrides]:
            set_dotted(cfg, *parse_override(item))
    except ConfigError as e:
        raise PlanError(f"{line.where}: {line.name}: {e}") from e
    set_dotted(cfg, ["train", "seed"], seed)
    cfg["view"], cfg["role"] = line.view, line.role
    _fill_teachers(cfg, exp_dir, layout)
    return cfg


def _trained_elsewhere(name: str, exp_dir: str, needed_by: str, where: str, archive: bool) -> Step:
    """A dependency not in the list: it must be trained already (its saved config gives its view)."""
    d = Path(exp_dir) / name
    if not (d / ".done").is_file() or not (d / "config.yaml").is_file():
        raise PlanError(f"{where}: {needed_by} reads {d}, but {name} is neither listed nor trained")
    try:
        saved = yaml_load((d / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PlanError(f"{where}: {needed_by} reads {name}, whose {d / 'config.yaml'} cannot be read: {e}") from e
    saved = saved if isinstance(saved, dict) else {}
    view = saved.get("view")
    if archive and view not in VIEWS and not (d / ARCHIVE_DIR / "cuts.jsonl.gz").is_file():
        raise PlanError(f"{where}: {needed_by} reads the archive of {name}, which has none yet, and "
                        f"{d / 'config.yaml'} records no view to write it on")
    return Step(name, str(saved.get("role", "-")), str(view or "-"), None, None, config=saved,
                sources=(str(d / "config.yaml"),))


def make_plan(experiments: Pathlike, seeds: Sequence[int] = (1,), exp_dir: str = "exp",
              layout: DataLayout = DataLayout(), overrides: Sequence[str] = (),
              shared: Sequence[Pathlike] = (), base: Pathlike = ".") -> list[Step]:
    """Every experiment of the file in run order (stage 4 first), then the unlisted ones it reads."""
    lines = read_experiments(experiments, shared, base)
    seeds = list(seeds) or [1]
    first = {}
    for line in lines:
        first.setdefault(line.name, line)
        if first[line.name] is not line:
            raise PlanError(f"{line.where}: {line.name} is listed twice (first at {first[line.name].where})")
    by_line = {line.name: reads(resolve(line, 1, exp_dir, layout, overrides), exp_dir) for line in lines}
    _check_acyclic(lines, by_line)

    # Stage 4: teachers and, transitively, what they read.
    early = {ln.name for ln in lines if ln.role == "teacher"}
    todo = list(early)
    while todo:
        for dep in by_line.get(todo.pop(), {}):
            if dep in first and dep not in early:
                early.add(dep)
                todo.append(dep)
    read_by_others = {d for deps in by_line.values() for d in deps}
    archive_read = {d for deps in by_line.values() for d, kind in deps.items() if kind == "archive"}

    steps: list[Step] = []
    for line in lines:
        m = SEED_RE.search(line.name)
        if m:
            runs = [(line.name, int(m.group(1)))]
        elif line.role == "teacher" or line.name in read_by_others:
            runs = [(line.name, 1)]
        else:
            runs = [(f"{line.name}_seed{s}" if len(seeds) > 1 else line.name, s) for s in seeds]
        for name, seed in runs:
            step = Step(name, line.role, line.view, seed,
                        TEACHER_STAGE if line.name in early else STUDENT_STAGE, dict(by_line[line.name]),
                        line.role == "teacher" or line.name in archive_read,
                        resolve(line, seed, exp_dir, layout, overrides),
                        (*(os.path.relpath(p) if p.is_absolute() else str(p) for p in line.configs),
                         *line.overrides))
            same = next((s for s in steps if s.name == name), None)
            if same is None:
                steps.append(step)
            elif same.config != step.config:  # e.g. x (at seeds "1 2") and x_seed2 listed differently
                raise PlanError(f"{line.where}: {name} is planned twice with different configs")
    steps.sort(key=lambda s: s.stage)  # stable: list order within a stage
    listed = {s.name for s in steps}
    extra: dict[str, Step] = {}
    for line in lines:
        for dep, kind in by_line[line.name].items():
            if dep not in listed and dep not in extra:
                extra[dep] = _trained_elsewhere(dep, exp_dir, line.name, line.where, kind == "archive")
            if dep in extra and kind == "archive":
                extra[dep].archived = True
    return steps + list(extra.values())


def _check_acyclic(lines: Sequence[Line], by_line: Mapping[str, Mapping[str, str]]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    where = {ln.name: ln.where for ln in lines}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2 or name not in by_line:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise PlanError(f"{where[name]}: experiments read each other in a cycle: {' -> '.join(cycle)} "
                            "(each reads the next one's outputs)")
        state[name] = 1
        for dep in by_line[name]:
            visit(dep, path + [name])
        state[name] = 2

    for ln in lines:
        visit(ln.name, [])


def config_path(out_dir: Pathlike, name: str) -> Path:
    return Path(out_dir) / f"{name}.yaml"


def to_tsv(steps: Sequence[Step], out_dir: Optional[Pathlike] = None) -> str:
    """One tab-separated line per step (columns :data:`TSV_COLUMNS`), for the recipe shell."""
    rows = ["\t".join(TSV_COLUMNS)]
    for s in steps:
        cfg = str(config_path(out_dir, s.name)) if out_dir is not None and s.stage is not None else "-"
        rows.append("\t".join([s.name, s.role, s.view, "-" if s.seed is None else str(s.seed),
                               "-" if s.stage is None else str(s.stage), s.deps_text(),
                               "yes" if s.archived else "no", cfg]))
    return "\n".join(rows) + "\n"


def to_table(steps: Sequence[Step]) -> str:
    """A table for people: one row per step, with what it reads and where its config comes from."""
    head = ("experiment", "role", "view", "seed", "stage", "reads", "archived", "configs")
    rows = [head] + [(s.name, s.role, s.view, "-" if s.seed is None else str(s.seed),
                      "done" if s.stage is None else str(s.stage), s.deps_text(),
                      "yes" if s.archived else "no", " ".join(s.sources)) for s in steps]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows) + "\n"


def to_json_lines(steps: Sequence[Step]) -> str:
    return "".join(json.dumps({"name": s.name, "role": s.role, "view": s.view, "seed": s.seed, "stage": s.stage,
                               "deps": s.deps, "archived": s.archived, "config": s.config}) + "\n" for s in steps)


def write_plan(steps: Sequence[Step], out_dir: Pathlike) -> Path:
    """``<out_dir>/<name>.yaml`` (the resolved config) per listed step and ``<out_dir>/plan.tsv``."""
    for s in steps:
        if s.stage is not None:
            atomic_write_text(config_path(out_dir, s.name), yaml.safe_dump(s.config, sort_keys=False))
    path = Path(out_dir) / "plan.tsv"
    atomic_write_text(path, to_tsv(steps, out_dir))
    return path
