"""kdasr.plan: stages, dependencies, seeds and resolved configs from an experiments file."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kdasr.cli.main import cli
from kdasr.plan import DataLayout, PlanError, make_plan


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe dir with its own conf/ and a shared dir holding conf/kd/t.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "m.yaml").write_text("model: {name: cnn}\ntrain: {epochs: 3}\n")
    (tmp_path / "conf" / "guide.yaml").write_text("kd:\n  strategy: guided\n  teachers: [{name: g}]\n")
    (tmp_path / "conf" / "ckpt.yaml").write_text("extra: {init: exp/t/best.pt}\n")
    (tmp_path / "shared" / "conf" / "kd").mkdir(parents=True)
    (tmp_path / "shared" / "conf" / "kd" / "t.yaml").write_text("kd:\n  teachers: [{name: t}]\n")
    return tmp_path


def _plan(recipe: Path, text: str, seeds=(1,), **kw):
    (recipe / "conf" / "experiments.txt").write_text(text)
    return make_plan("conf/experiments.txt", seeds, "exp", DataLayout(lang_dir="data/lang_bpe"),
                     shared=[recipe / "shared"], **kw)


LIST = """\
# name role view configs
s  student nb conf/m.yaml conf/kd/t.yaml train.epochs=5
h  student wb conf/m.yaml
t  teacher wb conf/m.yaml conf/guide.yaml
g  student wb conf/m.yaml
c  student wb conf/m.yaml conf/ckpt.yaml
"""


def test_stages_deps_and_resolved_configs(recipe: Path):
    steps = _plan(recipe, LIST, seeds=(1, 2), overrides=["train.lr=2e-3"])
    by = {s.name: s for s in steps}
    # What a teacher reads trains in stage 4, once, and is archived; the others once per seed.
    assert [(s.name, s.stage) for s in steps] == [
        ("t", 4), ("g", 4), ("s_seed1", 6), ("s_seed2", 6), ("h_seed1", 6), ("h_seed2", 6),
        ("c_seed1", 6), ("c_seed2", 6)]
    assert by["t"].deps == {"g": "archive"} and by["s_seed2"].deps == {"t": "archive"}
    assert by["c_seed1"].deps == {"t": "trained"} and by["h_seed1"].deps == {}
    assert [s.name for s in steps if s.archived] == ["t", "g"]
    cfg = by["s_seed2"].config
    assert cfg["kd"]["teachers"] == [{"name": "t", "archive": "exp/t/softlabels"}]  # from the shared dir
    assert cfg["train"] == {"epochs": 5, "lr": 2e-3, "seed": 2}
    assert (cfg["view"], cfg["role"]) == ("nb", "student")
    assert cfg["data"] == {"train_cuts": "data/fbank/cuts_train_nb.jsonl.gz", "dev_cuts": "data/fbank/cuts_dev_nb.jsonl.gz",
                           "cmvn": "data/fbank/cmvn_nb.json", "lang_dir": "data/lang_bpe"}


def test_a_line_override_of_the_data_layout_wins(recipe: Path):
    # e.g. one student trained on the cuts without their speed copies, beside the recipe's layout
    steps = _plan(recipe, "s student nb conf/m.yaml data.train_cuts=data/fbank/orig_nb.jsonl.gz\nh student nb conf/m.yaml\n",
                  overrides=["data.cmvn=other.json"])
    by = {s.name: s.config["data"] for s in steps}
    assert by["s"]["train_cuts"] == "data/fbank/orig_nb.jsonl.gz"
    assert by["h"]["train_cuts"] == "data/fbank/cuts_train_nb.jsonl.gz"
    assert by["s"]["dev_cuts"] == "data/fbank/cuts_dev_nb.jsonl.gz"
    assert by["s"]["cmvn"] == by["h"]["cmvn"] == "other.json"


def test_a_local_config_wins_over_the_shared_one(recipe: Path):
    (recipe / "conf" / "kd").mkdir()
    (recipe / "conf" / "kd" / "t.yaml").write_text("kd:\n  lambda: 0.2\n  teachers: [{name: t}]\n")
    steps = _plan(recipe, "t teacher wb conf/m.yaml\ns student wb conf/m.yaml conf/kd/t.yaml\n")
    assert steps[1].config["kd"]["lambda"] == 0.2 and steps[1].sources[1] == "conf/kd/t.yaml"


def test_a_seedN_line_trains_once_and_an_unlisted_teacher_must_be_trained(recipe: Path):
    with pytest.raises(PlanError, match=r"experiments.txt:1: s_seed3 reads exp/t, but t is neither listed nor trained"):
        _plan(recipe, "s_seed3 student wb conf/m.yaml conf/kd/t.yaml\n", seeds=(1, 2))
    (recipe / "exp" / "t").mkdir(parents=True)
    (recipe / "exp" / "t" / ".done").touch()
    (recipe / "exp" / "t" / "config.yaml").write_text("role: teacher\n")  # trained outside a recipe
    with pytest.raises(PlanError, match=r"reads the archive of t, which has none yet, and .* records no view"):
        _plan(recipe, "s_seed3 student wb conf/m.yaml conf/kd/t.yaml\n")
    (recipe / "exp" / "t" / "config.yaml").write_text("view: nb\nrole: teacher\n")
    steps = _plan(recipe, "s_seed3 student wb conf/m.yaml conf/kd/t.yaml\n", seeds=(1, 2))
    assert [(s.name, s.seed, s.stage, s.view, s.archived) for s in steps] == [
        ("s_seed3", 3, 6, "wb", False), ("t", None, None, "nb", True)]


@pytest.mark.parametrize("text, message", [
    ("t guide wb conf/m.yaml\n", r"experiments.txt:1: role 'guide' of t is not one of teacher, student"),
    ("t teacher xb conf/m.yaml\n", r"view 'xb' of t is not one of wb, nb"),
    ("t teacher wb\n", r"experiments.txt:1: expected 'name role view config.yaml"),
    ("t teacher wb conf/nope.yaml\n", r"config conf/nope.yaml not found"),
    ("t teacher wb conf/m.yaml\nt student wb conf/m.yaml\n", r"experiments.txt:2: t is listed twice"),
    ("# nothing\n", r"lists no experiment"),
    ("g teacher wb conf/m.yaml conf/kd/t.yaml\nt teacher wb conf/m.yaml conf/guide.yaml\n",
     r"read each other in a cycle: g -> t -> g"),
    ("t teacher wb train.epochs=3\n", r"t names no config file"),
])
def test_bad_lists_name_the_line(recipe: Path, text: str, message: str):
    with pytest.raises(PlanError, match=message):
        _plan(recipe, text)


def test_cli_prints_a_table_writes_configs_and_tsv(recipe: Path):
    (recipe / "conf" / "experiments.txt").write_text(LIST)
    args = ["plan", "conf/experiments.txt", "--seeds", "1 2", "--shared-configs", str(recipe / "shared")]
    res = CliRunner().invoke(cli, args + ["--out-dir", "exp/plan"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[1].split()[:7] == ["t", "teacher", "wb", "1", "4", "g=archive", "yes"]
    tsv = (recipe / "exp" / "plan" / "plan.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["name", "role", "view", "seed", "stage", "deps", "archived", "config"]
    assert tsv[3].split("\t") == ["s_seed1", "student", "nb", "1", "6", "t=archive", "no", "exp/plan/s_seed1.yaml"]
    assert "seed: 1" in (recipe / "exp" / "plan" / "s_seed1.yaml").read_text()
    res = CliRunner().invoke(cli, args + ["--format", "json"])
    assert res.exit_code == 0 and res.output.count("\n") == 8
    res = CliRunner().invoke(cli, ["plan", "conf/experiments.txt", "--seeds", "one"])
    assert res.exit_code != 0 and "seeds must be integers" in res.output
    (recipe / "conf" / "experiments.txt").write_text("t teacher wb conf/missing.yaml\n")
    res = CliRunner().invoke(cli, ["plan", "conf/experiments.txt"])
    assert res.exit_code == 1 and res.output.startswith("Error: conf/experiments.txt:1: config conf/missing.yaml")


def test_the_shared_configs_default_to_the_checkouts_recipes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1] / "egs" / "demo")
    res = CliRunner().invoke(cli, ["plan", "conf/experiments.txt", "--format", "tsv"])
    assert res.exit_code == 0, res.output
    rows = {line.split("\t")[0]: line.split("\t") for line in res.output.splitlines()}
    assert rows["cnn_wb_kd_vgg"][5] == "vgg_wb=archive" and rows["cnn_nb_kd_wb"][5] == "vgg_wb=archive,lstm_wb=archive"


def test_an_online_teacher_by_name_runs_its_checkpoint_on_its_view(recipe: Path):
    (recipe / "conf" / "online.yaml").write_text(
        "kd:\n  temperature: 2.0\n  teachers: [{name: t, checkpoint: best.pt, view: wb}]\n")
    steps = _plan(recipe, "t teacher wb conf/m.yaml\ns student nb conf/m.yaml conf/online.yaml\n")
    s = {x.name: x for x in steps}["s"]
    assert s.config["kd"]["teachers"] == [
        {"name": "t", "checkpoint": "exp/t/best.pt", "cuts": "data/fbank/cuts_train_wb.jsonl.gz"}]
    assert s.deps == {"t": "trained"}  # waits for the teacher's training, not for an archive
