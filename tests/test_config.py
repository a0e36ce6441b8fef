from pathlib import Path

import pytest

from kdasr.config import ConfigError, check_config, get_dotted, load_config, parse_override, save_config


def test_override_parsing_types():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("a=-2.5E+2") == (["a"], -250.0)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a=") == (["a"], None)
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("no_equals")


def test_files_merge_in_order_and_base(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 1.0\n  epochs: 3\nmodel:\n  name: cnn\n")
    (tmp_path / "a.yaml").write_text("base: base.yaml\ntrain:\n  lr: 2.0\n")
    (tmp_path / "b.yaml").write_text("model:\n  name: vgg\n  hidden: 8\n")
    cfg = load_config([tmp_path / "a.yaml", tmp_path / "b.yaml"], ["train.epochs=5", "new.key=x"])
    assert cfg["train"] == {"lr": 2.0, "epochs": 5}
    assert cfg["model"] == {"name": "vgg", "hidden": 8}
    assert get_dotted(cfg, "new.key") == "x"
    assert get_dotted(cfg, "missing.key", 7) == 7
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(tmp_path / "out" / "config.yaml") == cfg


def test_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "s.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match="not a section"):
        load_config(tmp_path / "s.yaml", ["a.b=2"])


SCHEMA = {"data": {"train_cuts": None, "max_duration": 120.0}, "train": {"epochs": 20, "amp": True, "name": "x",
          "spec_augment": {"p": 0.9, "num_frame_masks": 2}}, "model": None}


def _problems(cfg: dict, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        check_config(cfg, SCHEMA, **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_check_config_names_unknown_keys_with_the_closest():
    assert _problems({"train": {"epoch": 1}}) == "unknown key 'train.epoch' (did you mean 'train.epochs'?)"
    assert _problems({"trian": {"epochs": 1}}) == "unknown key 'trian.epochs' (did you mean 'train.epochs'?)"
    assert _problems({"train": {"spec_augment": {"num_frames_mask": 1}}}) == (
        "unknown key 'train.spec_augment.num_frames_mask' (did you mean 'train.spec_augment.num_frame_masks'?)")
    assert _problems({"zzz": 1}) == "unknown key 'zzz' (valid: data, model, train)"
    check_config({"model": {"anything": 1}, "train": {"epochs": 3}}, SCHEMA)  # open section, known keys


def test_check_config_types_and_required():
    assert _problems({"train": {"epochs": "abc"}}) == "train.epochs: expected an integer, got 'abc' (str)"
    assert "train.epochs: expected an integer, got 2.5" in _problems({"train": {"epochs": 2.5}})
    assert "train.amp: expected true or false, got 1" in _problems({"train": {"amp": 1}})
    assert "data.max_duration: expected a number" in _problems({"data": {"max_duration": True}})
    assert "train.spec_augment: expected a section" in _problems({"train": {"spec_augment": 3}})
    assert "data.train_cuts: expected a string" in _problems({"data": {"train_cuts": 5}}, types={"data.train_cuts": str})
    check_config({"data": {"max_duration": 60, "train_cuts": None}}, SCHEMA)  # an int is a number
    msg = _problems({"data": {"train_cuts": None}, "train": {"epoch": 1}}, required=("data.train_cuts",))
    assert msg == "unknown key 'train.epoch' (did you mean 'train.epochs'?); missing required key data.train_cuts"
