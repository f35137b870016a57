"""Transformer encoders get the task's ``transformer:`` settings; CNNs never see them.

A random-init ViT or Swin fine-tuned at a ResNet's rate collapses to one class (smoke
brain_tumor_finetune, lr 1e-3: accuracy 0.25 = the prior for vit_small and swin_tiny), so task files
give transformers their own values; what kind an encoder is comes from its architecture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from lvmbench.encoders.kinds import encoder_kind, has_attention_blocks
from lvmbench.identity import spec_dict
from lvmbench.protocols.base import resolve_settings
from lvmbench.protocols.knn import centred, knn_predict
from lvmbench.runner import EvalRequest, plan
from lvmbench.spec import RunUnit
from lvmbench.tasks import REPO_TASKS, get_task, load_task_file


@pytest.mark.parametrize(
    "name,kind",
    [
        ("resnet18", "cnn"), ("torchvision/resnet50", "cnn"), ("efficientnet_b0", "cnn"), ("convnext_tiny", "cnn"),
        ("vit_small_patch16_224", "transformer"), ("swin_tiny_patch4_window7_224", "transformer"),
        ("eva02_tiny_patch14_224", "transformer"), ("timm/deit_tiny_patch16_224", "transformer"),
        # registered names that need their release file to build: known without it
        ("lvmmed-vitb", "transformer"), ("lvmmed-r50", "cnn"), ("sam-vitb", "transformer"), ("imagenet-r50-tv", "cnn"),
    ],
)
def test_encoder_kind_comes_from_the_architecture(name, kind):
    assert encoder_kind(name) == kind


def test_attention_blocks_are_what_counts():
    assert has_attention_blocks(torch.nn.Sequential(torch.nn.MultiheadAttention(8, 2)))
    assert not has_attention_blocks(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)))


def test_the_block_replaces_settings_for_transformers_only():
    task = get_task("brain_tumor_finetune").for_suite("smoke")
    cnn, vit = resolve_settings(task, "finetune", kind="cnn"), resolve_settings(task, "finetune", kind="transformer")
    assert cnn.lr == 1e-3 and vit.lr == 3e-5
    assert cnn.model_dump() == {**vit.model_dump(), "lr": 1e-3}, "only the block's keys differ"
    det = resolve_settings(get_task("kvasir_det").for_suite("smoke"), "detection", kind="transformer")
    assert (det.epochs, det.lr, det.schedule.kind, det.schedule.warmup_epochs) == (10, 3e-4, "cosine", 1.0)


def test_plan_applies_the_recipe_and_cnn_identity_ignores_the_block(tmp_path):
    def planned(encoder):
        req = EvalRequest(encoder=encoder, suite="smoke", tasks=["brain_tumor_finetune"], results=tmp_path)
        (p,) = plan(req)[0]
        return p

    vit, cnn = planned("vit_small_patch16_224"), planned("resnet18")
    assert (vit.recipe, vit.settings.lr) == ("transformer", 3e-5)
    assert (cnn.recipe, cnn.settings.lr) == ("default", 1e-3)
    # the same task without the block: a ResNet's spec (hence identity) is unchanged by it
    raw = yaml.safe_load((REPO_TASKS / "brain_tumor_finetune" / "task.yaml").read_text(encoding="utf-8"))
    raw["profiles"]["smoke"]["protocols"]["finetune"].pop("transformer")
    folder = tmp_path / "brain_tumor_finetune"
    folder.mkdir()
    (folder / "task.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    bare = load_task_file(folder / "task.yaml").for_suite("smoke")
    unit = RunUnit(suite="smoke", task_id="brain_tumor_finetune", protocol="finetune", encoder="resnet18", weights_sha256="random-init")
    assert spec_dict(cnn.task, unit, cnn.settings) == spec_dict(bare, unit, resolve_settings(bare, "finetune", kind="cnn"))


def test_knn_centres_on_the_training_mean_then_votes_like_a_loop():
    """``center`` (default on): every split minus the training mean, then the cosine vote, equal to
    a brute-force loop; the test features never move the mean."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    x = {"train": torch.tensor(rng.normal(3.0, 1.0, (40, 8)), dtype=torch.float32), "test": torch.tensor(rng.normal(3.0, 1.0, (20, 8)), dtype=torch.float32)}
    c = centred(x)
    assert torch.allclose(c["train"].mean(0), torch.zeros(8), atol=1e-5)
    x2 = {**x, "test": x["test"] + 100.0}
    assert torch.equal(centred(x2)["train"], c["train"]), "test features never move the mean"
    prob = knn_predict(c["train"], torch.tensor(y[:40]), c["test"], 5, 3, 0.07)
    tr = (x["train"] - x["train"].mean(0)).double().numpy()
    te = (x["test"] - x["train"].mean(0)).double().numpy()
    tr /= np.linalg.norm(tr, axis=1, keepdims=True)
    te /= np.linalg.norm(te, axis=1, keepdims=True)
    for i, q in enumerate(te):
        sims = tr @ q
        votes = np.zeros(3)
        for j in np.argsort(-sims, kind="stable")[:5]:
            votes[y[j]] += np.exp(sims[j] / 0.07)
        assert np.allclose(prob[i], votes / votes.sum(), atol=1e-4)
    assert get_task("brain_tumor_linear").settings("knn").center is True


def test_a_plugin_builder_states_its_kind_or_is_built_on_meta(monkeypatch):
    from lvmbench.encoders import ENCODERS
    from lvmbench.encoders.adapters import TimmEncoder

    def needs_file(weights):
        if weights is None:
            raise FileNotFoundError("needs its weights")
        return TimmEncoder("test_vit")

    def declared(weights):
        raise FileNotFoundError("needs its weights")

    declared.architecture = "transformer"
    monkeypatch.setitem(ENCODERS._items, "plugin-needs-file", needs_file)
    monkeypatch.setitem(ENCODERS._items, "plugin-declared", declared)
    monkeypatch.setitem(ENCODERS._items, "plugin-tiny-vit", lambda weights: TimmEncoder("test_vit"))
    encoder_kind.cache_clear()
    try:
        assert encoder_kind("plugin-needs-file") == "cnn"  # unknowable: the default settings
        assert encoder_kind("plugin-declared") == "transformer"
        assert encoder_kind("plugin-tiny-vit") == "transformer"  # built on the meta device
    finally:
        encoder_kind.cache_clear()
