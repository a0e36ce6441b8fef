from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kdasr.cli.main import cli
from kdasr.score.report import collect, markdown_table


def _fake_exp(root: Path, name: str, role: str, params: int, wers: dict, seconds: float = 60.0) -> Path:
    exp = root / name
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump({"role": role}))
    (exp / "train_summary.yaml").write_text(yaml.safe_dump({"train_seconds": seconds}))
    for (test, method), wer in wers.items():
        d = exp / f"decode_{test}_{method}"
        d.mkdir()
        (d / "decode.yaml").write_text(yaml.safe_dump({
            "cuts": f"data/fbank/cuts_{test}.jsonl.gz", "method": method, "model": "cnn", "wer": wer,
            "num_params": params, "macs_per_second": 2e6, "rtf": 0.01,
            "per_condition_wer": {"clean": wer - 1, "snr5": wer + 1},
        }))
    return exp


def test_seeds_are_merged_and_table_lists_every_decode(tmp_path: Path):
    dirs = [
        _fake_exp(tmp_path, "vgg_teacher", "teacher", 4_000_000, {("test_wb", "greedy"): 5.0}),
        _fake_exp(tmp_path, "cnn_kd_seed1", "student", 500_000, {("test_wb", "greedy"): 10.0, ("test_nb", "greedy"): 12.0}),
        _fake_exp(tmp_path, "cnn_kd_seed2", "student", 500_000, {("test_wb", "greedy"): 12.0, ("test_nb", "greedy"): 14.0}),
    ]
    rows = collect(dirs)
    assert [r.name for r in rows] == ["vgg_teacher", "cnn_kd"]
    assert rows[1].wers[("test_wb", "greedy")] == [10.0, 12.0]
    table = markdown_table(rows)
    assert "| cnn_kd | student | cnn | 0.50M |" in table
    assert "11.00 ± 1.00" in table and "13.00 ± 1.00" in table
    assert "WER by condition on test_wb (greedy)" in table


def test_cer_table_of_the_decodes_that_have_one(tmp_path: Path):
    dirs = [_fake_exp(tmp_path, f"cnn_seed{i}", "student", 500_000, {("test_wb", "greedy"): 10.0}) for i in (1, 2)]
    dirs.append(_fake_exp(tmp_path, "old", "student", 500_000, {("test_wb", "greedy"): 20.0}))
    for exp, cer in zip(dirs[:2], (4.0, 6.0)):
        f = exp / "decode_test_wb_greedy" / "decode.yaml"
        f.write_text(yaml.safe_dump({**yaml.safe_load(f.read_text()), "cer": cer}))
    table = markdown_table(collect(dirs))
    cer = table.split("CER in %")[1].split("WER by condition")[0]
    assert "| cnn | 5.00 ± 1.00 |" in cer and "| old |" not in cer  # a decode without CER is not a row
    assert "CER in %" not in markdown_table(collect(dirs[2:]))


def test_decodes_with_other_options_are_columns_not_seeds(tmp_path: Path):
    exp = _fake_exp(tmp_path, "cnn", "student", 500_000, {("test_wb", "beam"): 70.0})
    other = exp / "decode_test_wb_beam_lm1"
    other.mkdir()
    (other / "decode.yaml").write_text((exp / "decode_test_wb_beam" / "decode.yaml").read_text().replace("70.0", "75.0"))
    (row,) = collect([exp])
    assert row.wers == {("test_wb", "beam"): [70.0], ("test_wb", "beam_lm1"): [75.0]}


def test_role_comes_from_the_saved_config_not_the_name(tmp_path: Path):
    named = _fake_exp(tmp_path, "teacher_guided_cnn", "student", 500_000, {("test_wb", "greedy"): 9.0})
    bare = _fake_exp(tmp_path, "vgg", "teacher", 4_000_000, {("test_wb", "greedy"): 5.0})
    (bare / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "vgg"}}))  # trained outside a recipe
    assert [r.role for r in collect([named, bare])] == ["student", "–"]


def test_report_cli_writes_markdown_and_png(tmp_path: Path):
    a = _fake_exp(tmp_path, "t", "teacher", 4_000_000, {("test_wb", "greedy"): 5.0})
    b = _fake_exp(tmp_path, "s", "student", 400_000, {("test_wb", "greedy"): 9.0})
    out, png = tmp_path / "RESULTS.md", tmp_path / "plot.png"
    res = CliRunner().invoke(cli, ["report", str(a), str(b), "--out", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "| s | student |" in out.read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_report_without_decodes_fails_clearly(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.md")])
    assert res.exit_code != 0
    assert "no decode results" in str(res.exception)


def test_plot_labels_spread_apart_but_stay_near_their_points() -> None:
    from kdasr.score.report import _spread

    # 10, 10.5, 11 collide: one block of three centred on 10.5; 50 keeps its own place
    assert _spread([10.0, 10.5, 11.0, 50.0], 2.0) == pytest.approx([8.5, 10.5, 12.5, 50.0])
    # a block grown into its neighbour merges with it
    got = _spread([0.0, 3.0, 3.1, 3.2], 2.0)
    assert all(b - a >= 2.0 - 1e-9 for a, b in zip(got, got[1:]))
    assert sum(got) / 4 == pytest.approx((0.0 + 3.0 + 3.1 + 3.2) / 4)
    assert _spread([], 1.0) == []


def test_the_gap_each_kd_student_closes_to_the_ensemble(tmp_path: Path):
    key = ("test_wb", "greedy")
    dirs = [
        _fake_exp(tmp_path, "vgg", "teacher", 4_000_000, {key: 8.0}),
        _fake_exp(tmp_path, "cnn", "student", 500_000, {key: 20.0}),
        _fake_exp(tmp_path, "cnn_kd", "student", 500_000, {key: 14.0}),
        _fake_exp(tmp_path, "cnn_nb_kd", "student", 500_000, {("test_nb", "greedy"): 15.0}),
        _fake_exp(tmp_path, "ens", "-", 8_000_000, {key: 10.0}),
        _fake_exp(tmp_path, "cnn_nb", "student", 500_000, {("test_nb", "greedy"): 22.0}),
        _fake_exp(tmp_path, "cnn_nb_kd_beam", "student", 500_000, {("test_nb", "beam"): 15.0}),
    ]
    for d, cfg in zip(dirs, [{"role": "teacher"}, {"role": "student", "view": "wb"},
                             {"role": "student", "view": "wb", "kd": {"teachers": [{"name": "vgg"}]}},
                             {"role": "student", "view": "nb", "kd": {"teachers": [{"name": "vgg"}]}}, None,
                             {"role": "student", "view": "nb"},
                             {"role": "student", "view": "nb", "kd": {"teachers": [{"name": "vgg"}]}}]):
        if cfg is None:
            continue
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (dirs[4] / "config.yaml").unlink()  # an ensemble is decoded, not trained: its decode.yaml names the members
    dec = dirs[4] / "decode_test_wb_greedy" / "decode.yaml"
    dec.write_text(yaml.safe_dump({**yaml.safe_load(dec.read_text()), "members": ["exp/vgg/best.pt", "exp/lstm/best.pt"]}))
    rows = collect(dirs)
    assert [r.role for r in rows] == ["teacher", "student", "student", "student", "ensemble", "student", "student"]
    table = markdown_table(rows)
    # (20 - 14) / (20 - 10): the wb KD student closes 60% of the gap
    assert "| cnn_kd | test_wb greedy | cnn 20.00 | ens 10.00 | 14.00 | 60% |" in table
    # the nb student against the broadband ensemble on the same utterances: (22 - 15) / (22 - 10)
    assert "| cnn_nb_kd | test_nb greedy | cnn_nb 22.00 | ens on test_wb 10.00 | 15.00 | 58% |" in table
    # no beam decode of the ensemble (nor of cnn_nb): no row
    assert "| cnn_nb_kd_beam | test_nb" not in table
