from pathlib import Path

import pytest

from kdasr.config import ConfigError, get_dotted, load_config, parse_override, save_config


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
