"""Training loop: outputs, exact resume after a kill, NaN guard, DDP on CPU, averaging."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from click.testing import CliRunner

from kdasr.cli.main import cli
from kdasr.models.checkpoint import load_checkpoint
from kdasr.train.checkpoint import average_checkpoints
from kdasr.train.trainer import Trainer, warmup_schedule
from synth import make_feature_cuts, synth_corpus


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> dict:
    corpus = synth_corpus(tmp_path_factory.mktemp("synth"), num_train=48, num_dev=8)
    root, cfg, paths = corpus["root"], corpus["cfg"], corpus["paths"]
    paths["nan"] = root / "cuts_nan.jsonl.gz"
    make_feature_cuts(root / "feats", num_cuts=12, seed=2, prefix="nan", nan_cuts=(5,)).to_file(paths["nan"])
    cfg["train"].update(save_every_n=1, keep_last_n=0)
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return {"root": root, "config": config, "cfg": cfg, "paths": paths}


def _kdasr(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdasr", *args]


def test_training_writes_outputs_and_learns(synth_data, tmp_path):
    exp = tmp_path / "exp"
    result = CliRunner().invoke(cli, ["train", str(synth_data["config"]), "--exp-dir", str(exp),
                                      "--set", "train.epochs=3", "--set", "train.save_every_n=0"])
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "epoch-1.pt", "epoch-3.pt", "best.pt", "train_summary.yaml", "log/train.log"):
        assert (exp / name).exists(), name
    assert list((exp / "tensorboard").iterdir())
    assert yaml.safe_load((exp / "config.yaml").read_text())["train"]["epochs"] == 3
    assert yaml.safe_load((exp / "train_summary.yaml").read_text())["epochs"] == 3
    hist = load_checkpoint(exp / "epoch-3.pt")["train_state"]["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert "dev_wer" in hist[0]
    out = CliRunner().invoke(cli, ["average", "--exp-dir", str(exp), "--avg", "2"])
    assert out.exit_code == 0, out.output
    avg = load_checkpoint(exp / "avg-3-2.pt")["model"]
    a, b = load_checkpoint(exp / "epoch-2.pt")["model"], load_checkpoint(exp / "epoch-3.pt")["model"]
    for k, v in avg.items():
        if v.is_floating_point():
            assert torch.allclose(v, (a[k] + b[k]) / 2, atol=1e-6), k


def test_resume_after_kill_gives_identical_weights(synth_data, tmp_path):
    """With the epoch annealing on, whose factor the resumed run must read from the restored epoch."""
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    args = [str(synth_data["config"]), "--set", "train.epochs=2", "--set", "train.lr_anneal=true"]
    subprocess.run(_kdasr("train", *args, "--exp-dir", str(ref)), check=True, capture_output=True)
    proc = subprocess.Popen(_kdasr("train", *args, "--exp-dir", str(killed)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "checkpoint-5.pt").exists():
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "epoch-2.pt").exists(), "the run was not killed mid-way"
    subprocess.run(_kdasr("train", *args, "--exp-dir", str(killed)), check=True, capture_output=True)
    log = (killed / "log" / "train.log").read_text()
    assert "resumed from" in log
    a, b = load_checkpoint(ref / "epoch-2.pt"), load_checkpoint(killed / "epoch-2.pt")
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_warmup_schedule_anneals_by_epoch():
    epoch = [1]
    plain, annealed = warmup_schedule(4), warmup_schedule(4, anneal_epochs=4, epoch=lambda: epoch[0])
    assert [plain(s) for s in (0, 3, 15)] == [0.25, 1.0, 0.5]  # warm-up, peak, sqrt(4/16)
    assert annealed(15) == 0.5
    epoch[0] = 3
    assert annealed(15) == 0.5 * 0.5  # 1 - (3 - 1) / 4
    epoch[0] = 9  # past the planned epochs: held at 1/4, never zero or negative
    assert annealed(15) == 0.5 * 0.25


def test_nan_batch_is_skipped_and_logged(synth_data, tmp_path):
    cfg = dict(synth_data["cfg"])
    cfg["data"] = dict(cfg["data"], train_cuts=str(synth_data["paths"]["nan"]), dev_cuts=None)
    cfg["train"] = dict(cfg["train"], epochs=1, save_every_n=0)
    trainer = Trainer(cfg, tmp_path / "exp")
    trainer.fit(resume=False)
    log = (tmp_path / "exp" / "log" / "train.log").read_text()
    skipped = [line for line in log.splitlines() if "non-finite loss" in line]
    assert len(skipped) == 1 and "nan-005" in skipped[0]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # The skipped batch's forward pass must not leave its statistics behind either.
    assert all(torch.isfinite(b).all() for b in trainer.model.buffers())
    tracked = {int(m.num_batches_tracked) for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm1d)}
    assert tracked == {trainer.state.step - 1}


def test_early_stopping_waits_while_dev_loss_falls(synth_data, tmp_path, monkeypatch):
    """On the all-blank CTC plateau WER stays at 100% but the loss falls: no early stop there."""
    cfg = dict(synth_data["cfg"])
    cfg["train"] = dict(cfg["train"], epochs=8, save_every_n=0, early_stop_patience=2)
    trainer = Trainer(cfg, tmp_path / "exp")
    dev = iter([(50.0, 100.0), (40.0, 100.0), (30.0, 100.0), (20.0, 100.0),  # plateau, loss falls
                (19.0, 60.0), (25.0, 70.0), (26.0, 65.0), (10.0, 10.0)])     # then 2 bad epochs
    monkeypatch.setattr(trainer, "validate", lambda: dict(zip(("dev_loss", "dev_wer"), next(dev))))
    state = trainer.fit(resume=False)
    assert [h["epoch"] for h in state.history] == [1, 2, 3, 4, 5, 6, 7]
    assert state.best_epoch == 5 and state.best_metric == 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_on_cpu_stay_in_sync(synth_data, tmp_path):
    exp = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), "-m", "kdasr", "train", str(synth_data["config"]),
           "--exp-dir", str(exp), "--set", "train.save_every_n=0"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    log = (exp / "log" / "train.log").read_text()
    assert "world size 2" in log
    assert "DDP ranks in sync" in log
    assert (exp / "log" / "train.rank1.log").exists()
    assert load_checkpoint(exp / "epoch-2.pt")["train_state"]["epoch"] == 2


def test_average_refuses_different_networks(synth_data, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, a)
    torch.save({"model": {"w": torch.zeros(3)}}, b)
    with pytest.raises(ValueError, match="different network"):
        average_checkpoints([a, b])


@pytest.mark.parametrize("override, message", [
    ("trian.epochs=1", "unknown key 'trian.epochs' (did you mean 'train.epochs'?)"),
    ("train.epoch=1", "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("train.lr=abc", "train.lr: expected a number, got 'abc' (str)"),
    ("model.chanels=8", "unknown key 'model.chanels' (did you mean 'model.channels'?)"),
    ("model.num_layers=two", "model.num_layers: expected an integer, got 'two' (str)"),
    ("data.lang_dir=", "missing required key data.lang_dir"),
    ("data.speeds=1.0", "data.speeds: expected a list, got 1.0"),
])
def test_config_mistakes_stop_before_training_in_one_line(synth_data, tmp_path, override, message):
    exp = tmp_path / "exp"
    res = CliRunner().invoke(cli, ["train", str(synth_data["config"]), "--exp-dir", str(exp), "--set", override])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {message}"
    assert not (exp / "config.yaml").exists() and not list(exp.glob("*.pt"))


def test_speeds_the_cuts_do_not_hold_stop_before_the_first_step(synth_data, tmp_path):
    exp = tmp_path / "exp"
    res = CliRunner().invoke(cli, ["train", str(synth_data["config"]), "--exp-dir", str(exp), "--set", "data.speeds=[0.9]"])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: data.speeds [0.9]: {synth_data['cfg']['data']['train_cuts']} holds none "
                                  "of them (its speeds: [1.0])")
    assert not list(exp.glob("*.pt"))


def test_config_mistake_traceback_only_with_verbose(synth_data, tmp_path):
    args = ["train", str(synth_data["config"]), "--exp-dir", str(tmp_path / "e"), "--set", "train.lr=abc"]
    quiet = subprocess.run(_kdasr(*args), capture_output=True, text=True)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().splitlines() == ["Error: train.lr: expected a number, got 'abc' (str)"]
    loud = subprocess.run(_kdasr("-v", *args), capture_output=True, text=True)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "ConfigError" in loud.stderr


def test_resume_refuses_a_changed_config_before_writing(synth_data, tmp_path):
    exp = tmp_path / "exp"
    base = ["train", str(synth_data["config"]), "--exp-dir", str(exp), "--set", "train.save_every_n=0"]
    run = lambda *extra: CliRunner().invoke(cli, [*base, "--set", "train.epochs=1", *extra])  # noqa: E731
    assert run().exit_code == 0
    saved, ckpts = (exp / "config.yaml").read_bytes(), sorted(p.name for p in exp.glob("*.pt"))
    res = run("--set", "train.lr=5e-4", "--set", "model.channels=16")
    assert res.exit_code == 1
    assert "resuming would change model.channels: 32 -> 16, train.lr: 0.003 -> 0.0005." in res.output
    assert (exp / "config.yaml").read_bytes() == saved and sorted(p.name for p in exp.glob("*.pt")) == ckpts
    res = CliRunner().invoke(cli, [*base, "--set", "train.epochs=2"])  # more epochs: safe
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((exp / "config.yaml").read_text())["train"]["epochs"] == 2 and (exp / "epoch-2.pt").exists()
    log = (exp / "log" / "train.log").read_text()
    assert "resuming with train.epochs changed: 1 -> 2" in log and "resumed from" in log
    res = CliRunner().invoke(cli, [*base, "--set", "train.epochs=2", "--set", "train.lr=5e-4",
                                   "--allow-config-change", "train.lr"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((exp / "config.yaml").read_text())["train"]["lr"] == 5e-4
    res = CliRunner().invoke(cli, [*base, "--set", "train.epochs=3", "--set", "train.lr_anneal=true",
                                   "--allow-config-change", "train.lr_anneal"])
    assert res.exit_code == 1 and "train.epochs: 2 -> 3" in res.output  # the annealing depends on it


def test_second_run_on_one_exp_dir_stops_naming_the_holder(synth_data, tmp_path):
    exp = tmp_path / "exp"
    args = ["train", str(synth_data["config"]), "--exp-dir", str(exp), "--set", "train.epochs=1000"]
    first = subprocess.Popen(_kdasr(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (exp / "checkpoints").is_dir():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        t0 = time.time()
        second = subprocess.run(_kdasr(*args), capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and time.time() - t0 < 60
        assert f"is in use by another kdasr train: PID {first.pid} " in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A killed holder leaves the lock file, not the lock.
    third = subprocess.run(_kdasr(*args[:-1], "train.epochs=1", "--set", "train.save_every_n=0"),
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
