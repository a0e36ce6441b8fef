"""Helpers of the recipe tests (mock corpora through egs/*/run.sh); not fixtures, so not in conftest.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from lhotse import load_manifest

REPO = Path(__file__).resolve().parents[1]
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar".split()


def write_tone(path: Path, seconds: float, seed: int, sr: int = 16000, fmt: str | None = None) -> Path:
    """A few seconds of a gliding tone plus noise (enough for fbank and the telephone channel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 150 + 100 * rng.random()
    x = 0.3 * np.sin(2 * np.pi * (f0 + 40 * t) * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(path, x.astype(np.float32), sr, format=fmt, subtype="PCM_16")
    return path


def sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 7)))).upper()


def recipe_copy(tmp_path: Path, name: str) -> Path:
    """egs/<name> copied next to links to the shared recipes/ and tools/, so outputs stay in tmp."""
    shutil.copytree(REPO / "egs" / name, tmp_path / "egs" / name, ignore=shutil.ignore_patterns("data", "exp"))
    for d in ("recipes", "tools"):
        (tmp_path / d).symlink_to(REPO / d)
    return tmp_path / "egs" / name


def run_recipe(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(["bash", "run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        logs = "".join(f"\n--- {p}\n{p.read_text()[-2000:]}" for p in sorted((recipe / "data" / "log").glob("*.log")))
        pytest.fail(f"run.sh {' '.join(args)} exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}{logs}")
    return res


def ids(path: Path) -> list[str]:
    return sorted(c.id for c in load_manifest(path))


def check_stages_0_to_3(data: Path, parts: list[str], kind: str) -> dict:
    """Manifests, both views, features and the lang dir exist, and every view of a part has the same cut ids."""
    cuts = {}
    for part in parts:
        source = ids(data / "manifests" / f"cuts_{part}.jsonl.gz")
        assert source, part
        assert ids(data / "manifests" / f"cuts_{part}_nb.jsonl.gz") == source, part
        frames = {}
        for view, rate, bins in (("wb", 16000, 80), ("nb", 8000, 40)):
            feats = list(load_manifest(data / "fbank" / f"cuts_{part}_{view}.jsonl.gz"))
            assert sorted(c.id for c in feats) == source, (part, view)
            assert all(c.has_features and c.num_features == bins and c.sampling_rate == rate for c in feats)
            assert (data / "fbank" / f"{part}_{view}").is_dir()
            frames[view] = {c.id: c.num_frames for c in feats}
            cuts[(part, view)] = feats
        assert frames["wb"] == frames["nb"], part
    for view in ("wb", "nb"):
        stats = json.loads((data / "fbank" / f"cmvn_{view}.json").read_text())
        assert stats["num_frames"] > 0
    lang = data / f"lang_{kind}"
    assert (lang / "tokens.txt").read_text().splitlines()[0] == "<blk> 0"
    assert yaml.safe_load((lang / "lang.yaml").read_text())["kind"] == kind
    for log in ("fbank.log", "tokens.log"):
        assert "# Ended (code 0)" in (data / "log" / log).read_text()
    return cuts
