"""Pretraining monitors: kNN against a brute-force kNN, collapse flags, the metrics.jsonl schema,
that monitoring changes nothing about training, and the plot command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_helpers import config, write_images
from typer.testing import CliRunner

from lvmbench.pretrain.monitors.embedding import effective_rank, embedding_stats
from lvmbench.pretrain.monitors.knn import KNNMonitor, MonitorImages, knn_accuracy
from lvmbench.pretrain.monitors.record import read_metrics
from lvmbench.pretrain.monitors.session import MonitorConfig, Monitors
from lvmbench.pretrain.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_knn(bank: np.ndarray, bank_y: np.ndarray, query: np.ndarray, k: int, n_cls: int, t: float) -> np.ndarray:
    """Per query: centre on the bank mean, cosine to every bank vector, sort, weighted vote."""
    mean = bank.mean(axis=0)
    b, q = bank - mean, query - mean
    preds = []
    for x in q:
        sims = [float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) for y in b]
        order = sorted(range(len(b)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * n_cls
        for i in order:
            votes[bank_y[i]] += math.exp(sims[i] / t)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_monitor_equals_brute_force_knn_on_fixed_features(k):
    rng = np.random.default_rng(k)
    centres = rng.normal(size=(3, 16))
    bank_y = rng.integers(0, 3, 60)
    query_y = rng.integers(0, 3, 25)
    bank = centres[bank_y] + 1.5 * rng.normal(size=(60, 16))
    query = centres[query_y] + 1.5 * rng.normal(size=(25, 16))
    pred = brute_knn(bank, bank_y, query, k, 3, 0.07)
    res = knn_accuracy(torch.tensor(bank), torch.tensor(bank_y), torch.tensor(query), torch.tensor(query_y), k, 3, 0.07)
    assert res["acc"] == pytest.approx(float((pred == query_y).mean()), abs=1e-12)
    recalls = [float((pred[query_y == c] == c).mean()) for c in range(3)]
    assert res["balanced_acc"] == pytest.approx(float(np.mean(recalls)), abs=1e-12)
    assert 0.34 < res["acc"]  # separable clusters: well above chance, so a wrong vote would show


def test_effective_rank_of_known_spectra():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    basis = q[:, :3]  # 3 orthonormal directions, equal energy -> effective rank 3 exactly
    coeff = np.linalg.qr(rng.normal(size=(40, 3)))[0]
    coeff -= coeff.mean(axis=0)
    z = torch.tensor(coeff @ basis.T * 5 + 2.0)  # offset: the rank is of the centred batch
    s = np.linalg.svd(coeff @ basis.T, compute_uv=False)[:3]
    p = s / s.sum()
    assert effective_rank(z) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-9)
    assert effective_rank(torch.randn(256, 8, dtype=torch.float64)) > 7.5


def test_constant_output_is_flagged_as_collapse_and_random_output_is_not():
    const = torch.ones(32, 64) * torch.randn(1, 64)
    s = embedding_stats(const)
    assert s["collapsed"] and s["effective_rank"] == 0.0 and s["std"] < 1e-6
    s = embedding_stats(torch.randn(32, 64))
    assert not s["collapsed"] and s["std"] > 0.8 and s["effective_rank"] > 20


class ConstantEncoder(torch.nn.Module):
    """A collapsed encoder: the same embedding whatever the image."""

    embed_dim = 8

    def __init__(self):
        super().__init__()
        from lvmbench.encoders.base import InputSpec

        self.input_spec = InputSpec()
        self.w = torch.nn.Parameter(torch.randn(8))

    def embed(self, x):
        return self.w.expand(x.shape[0], 8) + 0 * x.mean()


def test_collapsed_encoder_is_flagged_in_the_entry_and_the_printed_line(tmp_path):
    g = torch.Generator().manual_seed(0)
    imgs = MonitorImages("toy", torch.randint(0, 255, (20, 3, 16, 16), generator=g, dtype=torch.uint8), torch.arange(20) % 2,
                         torch.randint(0, 255, (10, 3, 16, 16), generator=g, dtype=torch.uint8), torch.arange(10) % 2, 2, "imagenet", 0.07)
    lines: list[str] = []
    mon = Monitors(MonitorConfig(every=1), tmp_path, total=2, stop=2, batch_size=4, images=20, view_size=16, device=torch.device("cpu"), log=lines.append)
    mon.knn = [KNNMonitor(imgs, k=3)]
    enc = ConstantEncoder()
    obj = torch.nn.Module()
    obj.outputs = {"embedding": enc.embed(torch.zeros(4, 3, 16, 16)).detach(), "projection": torch.randn(4, 5)}
    mon.after_step({"step": 0, "lr": 1e-3, "loss": 0.5, "step_s": 0.1})
    entry = mon.report(1, enc, obj)
    assert entry["embedding"]["collapsed"] and not entry["projection"]["collapsed"]
    assert entry["knn"]["toy"]["collapsed"] and entry["collapsed"]
    assert "COLLAPSED" in lines[-1]


def same_weights(a: Path, b: Path) -> bool:
    """Tensor by tensor (the files' bytes are not comparable: safetensors writes its metadata map
    in an unspecified order)."""
    from safetensors.torch import load_file

    x, y = load_file(str(a / "encoder.safetensors")), load_file(str(b / "encoder.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def monitored(one_thread, synth_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mon")
    images = write_images(tmp / "images", 32, seed=4)
    cfg = config(images, tmp / "out", steps=4, batch_size=16, objective="simclr", monitor_tasks=["brain_tumor_linear"], monitor_every=2,
                 monitor_suite="smoke", monitor_data_root=str(synth_root), monitor_size=32, checkpoint_every=2)
    train(cfg)
    return cfg, images


def test_metrics_jsonl_schema(monitored):
    cfg, _ = monitored
    entries = read_metrics(Path(cfg.out) / "metrics.jsonl")
    assert [e["step"] for e in entries] == [0, 2, 4]
    for e in entries:
        assert e["schema"] == 1 and e["steps_total"] == 4
        assert set(e) >= {"step", "epoch", "lr", "objective", "time", "embedding", "projection", "knn", "collapsed"}
        r = e["knn"]["brain_tumor_linear"]
        assert 0 <= r["acc"] <= 1 and 0 <= r["balanced_acc"] <= 1 and r["k"] == 20 and r["bank"] > 0 and r["queries"] > 0
        assert isinstance(e["collapsed"], bool) and e["time"]["monitor_s"] >= 0
    first, later = entries[0], entries[1:]
    assert first["objective"] == {} and first["embedding"] == {}  # step 0: the initial weights, before any step
    for e in later:
        assert {"loss", "contrastive_acc"} <= set(e["objective"]) and e["time"]["images_per_s"] > 0
        assert e["embedding"]["dim"] == 512 and e["projection"]["dim"] == 128 and e["embedding"]["max_rank"] == 15


def test_monitors_do_not_change_training(monitored, tmp_path):
    cfg, images = monitored
    plain = config(images, tmp_path / "plain", steps=4, batch_size=16, objective="simclr", checkpoint_every=2)
    train(plain)
    assert same_weights(Path(plain.out), Path(cfg.out))
    # without a kNN task the collapse and throughput entries are still written (default: 20 per run)
    entries = read_metrics(Path(plain.out) / "metrics.jsonl")
    assert [e["step"] for e in entries] == [0, 1, 2, 3, 4] and all(e["knn"] == {} for e in entries)


def test_resume_trims_metrics_and_continues_exactly(monitored, synth_root, tmp_path):
    cfg, images = monitored
    kw = {"steps": 4, "batch_size": 16, "objective": "simclr", "monitor_tasks": ["brain_tumor_linear"], "monitor_every": 2,
          "monitor_suite": "smoke", "monitor_data_root": str(synth_root), "monitor_size": 32, "checkpoint_every": 2}
    out = tmp_path / "resumed"
    train(config(images, out, stop_at=2, **kw))
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "schema": 1}\n{"step": 4, "trunc')  # written after the checkpoint, then a crash mid-line
    train(config(images, out, resume=True, **kw))
    assert [e["step"] for e in read_metrics(out / "metrics.jsonl")] == [0, 2, 4]
    assert same_weights(out, Path(cfg.out))


def test_plot_command_writes_a_png(monitored, tmp_path):
    from lvmbench.cli import app

    cfg, _ = monitored
    png = tmp_path / "m.png"
    res = CliRunner().invoke(app, ["pretrain", "plot", cfg.out, str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    bad = CliRunner().invoke(app, ["pretrain", "plot", str(tmp_path)])
    assert "no monitor entries" in str(bad.exception)


def test_plot_of_a_hand_edited_binary_or_huge_log_is_one_line(tmp_path):
    from lvmbench.cli import app

    def plot(*args: str):
        return CliRunner().invoke(app, ["pretrain", "plot", *args])

    run = tmp_path / "run"
    run.mkdir()
    log = run / "metrics.jsonl"
    for text in ['[1, 2, 3]\n', '{"step": "x", "loss": 1}\n"just a string"\n', '{"step": 1, "knn": \n']:
        log.write_text(text, encoding="utf-8")
        res = plot(str(run))
        assert "no monitor entries" in str(res.exception), (text, res.exception)
    log.write_bytes(np.random.default_rng(0).bytes(4000))
    assert "no monitor entries" in str(plot(str(run)).exception)
    assert read_metrics(log) == []
    log.write_text('{"step": true}\n{"step": 3, "objective": {"loss": 2.0}}\n', encoding="utf-8")
    assert [e["step"] for e in read_metrics(log)] == [3]  # only entries with an integer step
    res = plot(str(run), str(tmp_path / "no-such-folder" / "m.png"))
    assert "PNG's folder does not exist" in str(res.exception) and not (tmp_path / "no-such-folder").exists()
    with open(log, "ab") as f:
        f.truncate(65 << 20)  # sparse: a 65 MiB file that costs no disk
    res = plot(str(run))
    assert "larger than 64 MiB" in str(res.exception)


def test_max_minutes_stops_with_a_last_report_and_a_resumable_checkpoint(tmp_path):
    images = write_images(tmp_path / "images", 32, seed=5)
    cfg = config(images, tmp_path / "o", steps=6, batch_size=16, objective="simclr", max_minutes=1e-9, checkpoint_every=100)
    train(cfg)
    meta = json.loads((tmp_path / "o" / "pretrain.json").read_text(encoding="utf-8"))
    assert meta["steps_done"] == 1 and not meta["finished"]
    assert [e["step"] for e in read_metrics(tmp_path / "o" / "metrics.jsonl")] == [0, 1]
    train(config(images, tmp_path / "o", steps=6, batch_size=16, objective="simclr", checkpoint_every=100, resume=True))
    assert json.loads((tmp_path / "o" / "pretrain.json").read_text(encoding="utf-8"))["steps_done"] == 6


def test_plot_refuses_a_symlinked_png_and_leaves_its_target(monitored, tmp_path):
    from lvmbench.cli import app

    cfg, _ = monitored
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's own picture")
    link = tmp_path / "link.png"
    link.symlink_to(mine)
    res = CliRunner().invoke(app, ["pretrain", "plot", cfg.out, str(link)])
    assert res.exit_code != 0 and "symbolic link" in str(res.exception)
    assert link.is_symlink() and mine.read_bytes() == b"the user's own picture"


@pytest.mark.parametrize("name", ["encoder.safetensors", "pretrain.json", "log.jsonl"])
def test_pretrain_refuses_a_link_among_its_outputs_before_any_step(tmp_path, name):
    """--out may hold an earlier run; a link where the run writes would be replaced (or appended
    through) hours later: refused at the start, the user's file untouched."""
    from lvmbench.errors import UserError

    images = write_images(tmp_path / "img", 16)
    out = tmp_path / "run"
    out.mkdir()
    mine = tmp_path / "my_weights.bin"
    mine.write_bytes(b"mine")
    (out / name).symlink_to(mine)
    with pytest.raises(UserError, match="symbolic link"):
        train(config(images, out, steps=2))
    assert (out / name).is_symlink() and mine.read_bytes() == b"mine"
    assert not (out / "checkpoint.pt").exists()
