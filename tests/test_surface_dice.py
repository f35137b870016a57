"""Normalised surface Dice against two independent implementations, and the empty-mask policy.

Oracles: DeepMind's ``surface-distance`` (PyPI ``surface-distance``, the code MSD/MedSAM/FLARE score
with) and MONAI's ``compute_surface_dice(use_subvoxels=True)`` (MONAI's own port of the same
surfel definition, float32). MONAI's default boundary-voxel NSD is a different quantity: the tests
pin where it agrees (identical masks, huge or tiny tolerances) and that it differs elsewhere.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import surface_distance as deepmind
import torch
from monai.metrics import compute_surface_dice
from scipy import ndimage
from surface_distance import lookup_tables as deepmind_tables

from lvmbench.metrics.empty_masks import apply_empty_policy
from lvmbench.metrics.segmentation import clean_overlap, hd95, volume_overlap
from lvmbench.metrics.surface import normalized_surface_dice, nsd_per_class
from lvmbench.metrics.surfel_table import contour_lengths_2d, surfel_areas_3d
from lvmbench.protocols.clean_scoring import NSD_SURFACE
from lvmbench.protocols.seg_scores import clean_scores, summarize_clean
from lvmbench.spec import RunOptions


@pytest.fixture(autouse=True)
def numpy2_inf(monkeypatch):
    """surface-distance 0.1 writes ``np.Inf`` (gone in NumPy 2) when one mask is empty."""
    if "Inf" not in np.__dict__:
        monkeypatch.setattr(np, "Inf", np.inf, raising=False)


def deepmind_nsd(pred: np.ndarray, gt: np.ndarray, spacing, tol: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 when both masks are empty
        d = deepmind.compute_surface_distances(gt.astype(bool), pred.astype(bool), list(spacing))
        return float(deepmind.compute_surface_dice_at_tolerance(d, tol))


def monai_nsd(pred: np.ndarray, gt: np.ndarray, spacing, tol: float, subvoxels: bool = True) -> float:
    onehot = lambda m: torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = compute_surface_dice(onehot(pred.astype(bool)), onehot(gt.astype(bool)), [tol], include_background=False, spacing=list(spacing), use_subvoxels=subvoxels)
    return float(v.reshape(-1)[0])


def _blob(rng: np.random.Generator, shape: tuple[int, ...], fill: float = 0.3) -> np.ndarray:
    smooth = ndimage.gaussian_filter((rng.random(shape) < fill).astype(float), 1.5)
    return smooth > np.quantile(smooth, 1 - fill)


def _point(shape: tuple[int, ...], at: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[at] = True
    return m


def random_cases() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...], float]]:
    """(name, prediction, ground truth, spacing, tolerance): 2D and 3D, anisotropic, noisy and smooth,
    objects on the border, thin ones, single voxels, empty masks."""
    rng = np.random.default_rng(2024)
    cases = []
    for i in range(8):  # smooth shapes, random anisotropic spacing and tolerance
        nd = 2 + i % 2
        shape = tuple(int(s) for s in rng.integers(8, 40, nd))
        sp = tuple(float(s) for s in rng.uniform(0.3, 3.0, nd))
        cases.append((f"blob{nd}d-{i}", _blob(rng, shape), _blob(rng, shape), sp, float(rng.uniform(0.5, 4))))
    for i in range(4):  # salt-and-pepper: every neighbour code occurs
        nd = 2 + i % 2
        shape = (30, 25) if nd == 2 else (12, 14, 10)
        sp = (0.8, 1.7) if nd == 2 else (2.5, 0.7, 1.1)
        cases.append((f"noise{nd}d-{i}", rng.random(shape) < 0.4, rng.random(shape) < 0.5, sp, 1.0 + i))
    gt = _blob(rng, (20, 24))
    cases.append(("shift2d-exact-tolerance", np.roll(gt, 1, axis=0), gt, (1.0, 1.0), 1.0))  # distances exactly at the tolerance
    gt3 = _blob(rng, (10, 16, 12))
    cases.append(("shift3d-thick-slices", np.roll(gt3, 1, axis=0), gt3, (5.0, 0.8, 0.8), 2.0))
    border = np.zeros((16, 16), bool)
    border[:6, :] = True
    cases.append(("touches-border", border, np.roll(border, 2, axis=0), (1.0, 1.0), 1.5))
    thin = np.zeros((20, 20, 6), bool)
    thin[10, 2:18, 3] = True
    cases.append(("one-voxel-line", np.roll(thin, 1, axis=1), thin, (1.0, 1.0, 3.0), 1.0))
    cases.append(("single-pixels", _point((9, 9), (4, 4)), _point((9, 9), (4, 6)), (1.0, 1.0), 1.0))
    cases.append(("single-voxels", _point((7, 7, 7), (3, 3, 3)), _point((7, 7, 7), (3, 3, 3)), (0.5, 2.0, 1.0), 0.1))
    cases.append(("single-voxel-vs-blob", _point((12, 12, 8), (2, 2, 2)), _blob(rng, (12, 12, 8)), (1.0, 1.0, 2.0), 3.0))
    cases.append(("empty-gt-2d", _blob(rng, (15, 15)), np.zeros((15, 15), bool), (1.0, 0.5), 2.0))
    cases.append(("empty-pred-3d", np.zeros((8, 9, 10), bool), _blob(rng, (8, 9, 10)), (1.0, 1.0, 1.0), 2.0))
    cases.append(("both-empty-2d", np.zeros((6, 7), bool), np.zeros((6, 7), bool), (1.0, 1.0), 1.0))
    return cases


CASES = random_cases()


def test_enough_cases():
    assert len(CASES) >= 20
    assert {p.ndim for _, p, _, _, _ in CASES} == {2, 3}


@pytest.mark.parametrize("name,pred,gt,spacing,tol", CASES, ids=[c[0] for c in CASES])
def test_nsd_equals_deepmind_surface_distance(name, pred, gt, spacing, tol):
    ours, ref = normalized_surface_dice(pred, gt, tol, spacing), deepmind_nsd(pred, gt, spacing, tol)
    if not pred.any() and not gt.any():
        assert math.isnan(ours) and math.isnan(ref)  # 0/0: left to the empty policy
    else:
        assert ours == pytest.approx(ref, abs=1e-9)
        assert 0.0 <= ours <= 1.0


@pytest.mark.parametrize("name,pred,gt,spacing,tol", [c for c in CASES if c[1].any() or c[2].any()], ids=[c[0] for c in CASES if c[1].any() or c[2].any()])
def test_nsd_equals_monai_subvoxel_surface_dice(name, pred, gt, spacing, tol):
    assert normalized_surface_dice(pred, gt, tol, spacing) == pytest.approx(monai_nsd(pred, gt, spacing, tol), abs=1e-6)


def test_ties_at_the_tolerance_follow_deepmind():
    """A tolerance equal to distances reached by different offsets (3 x 0.7 mm and 1 x 2.1 mm differ
    in the last bit): the nearest cell must be the one scipy's feature transform picks, as there."""
    rng = np.random.default_rng(11)
    for shift in (1, 2, 3):
        gt = _blob(rng, (30, 26, 14))
        pred = np.roll(gt, shift, axis=2 if shift == 1 else 0)
        for tol in (0.7, 1.4, 2.1, 2.6, 4.2):
            # equal up to summation order; one surfel counted differently would move it by > 1e-5
            assert normalized_surface_dice(pred, gt, tol, (0.7, 1.3, 2.1)) == pytest.approx(deepmind_nsd(pred, gt, (0.7, 1.3, 2.1), tol), abs=1e-12), (shift, tol)


def _deepmind_code(ours: int, nd: int) -> int:
    """Our bit i (offset a, b[, c] read as a binary number) is DeepMind's bit 2**nd - 1 - i."""
    n = 1 << nd
    return sum(1 << (n - 1 - i) for i in range(n) if ours >> i & 1)


@pytest.mark.parametrize("seed", range(5))
def test_surfel_tables_equal_deepmind_lookup_tables(seed):
    sp = tuple(float(s) for s in np.random.default_rng(seed).uniform(0.1, 5.0, 3))
    ref3, ref2 = deepmind_tables.create_table_neighbour_code_to_surface_area(sp), deepmind_tables.create_table_neighbour_code_to_contour_length(sp[:2])
    ours3, ours2 = surfel_areas_3d(sp), contour_lengths_2d(sp[:2])
    assert max(abs(ours3[c] - ref3[_deepmind_code(c, 3)]) for c in range(256)) < 1e-12
    assert max(abs(ours2[c] - ref2[_deepmind_code(c, 2)]) for c in range(16)) < 1e-12


def test_monai_default_agrees_only_at_the_extremes():
    """MONAI's default counts boundary voxels (centres) instead of corner surfels weighted by area:
    the same 1 for identical masks or a tolerance beyond every distance, the same 0 for far-apart
    masks, a different number in between."""
    rng = np.random.default_rng(7)
    gt = _blob(rng, (24, 24, 12))
    far = np.zeros((60, 24, 12), bool)
    far[:24], sep = gt, np.zeros((60, 24, 12), bool)
    sep[40:] = gt[:20]
    for pred, truth, tol in [(gt, gt, 0.5), (np.roll(gt, 2, axis=0), gt, 100.0), (sep, far, 1.0)]:
        ours, voxels = normalized_surface_dice(pred, truth, tol, (1.0, 1.0, 2.0)), monai_nsd(pred, truth, (1.0, 1.0, 2.0), tol, subvoxels=False)
        assert ours == pytest.approx(voxels, abs=1e-6) and ours in (0.0, 1.0)
    shifted = np.roll(gt, 2, axis=0)  # two voxels off at a tolerance of one: 0.84 against 0.71
    assert normalized_surface_dice(shifted, gt, 1.0, (1.0, 1.0, 2.0)) - monai_nsd(shifted, gt, (1.0, 1.0, 2.0), 1.0, subvoxels=False) > 0.05
    one, other = _point((9, 9), (4, 4)), _point((9, 9), (4, 6))  # two pixels 2 apart at tolerance 1: 0.5 against 0
    assert normalized_surface_dice(one, other, 1.0) == pytest.approx(0.5) and monai_nsd(one, other, (1.0, 1.0), 1.0, subvoxels=False) == 0.0


def test_spacing_is_used_and_checked():
    gt = np.zeros((6, 20, 20), bool)
    gt[2:4, 5:15, 5:15] = True
    pred = np.roll(gt, 1, axis=0)
    assert normalized_surface_dice(pred, gt, 1.0, (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert normalized_surface_dice(pred, gt, 1.0, (3.0, 1.0, 1.0)) < 0.9  # slices 3 mm apart: one slice off is 3 mm
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(pred, gt, 1.0, (1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        normalized_surface_dice(pred[:-1], gt, 1.0)


# -- the empty-mask policy ---------------------------------------------------------------------------

def _label_maps() -> tuple[np.ndarray, np.ndarray]:
    """Class 1 in both, 2 in neither, 3 only predicted, 4 only in the ground truth."""
    gt, pred = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    gt[2:8, 2:8], pred[3:9, 2:8] = 1, 1
    pred[12:15, 12:15] = 3
    gt[15:18, 2:6] = 4
    return pred, gt


NAN = float("nan")
POLICY_TABLE = {  # classes 2 (both empty), 3 (gt empty, pred not), 4 (pred empty, gt not)
    "one": {"overlap": [1.0, 0.0, 0.0], "hd95": [0.0, NAN, NAN]},
    "zero": {"overlap": [0.0, 0.0, 0.0], "hd95": [NAN, NAN, NAN]},
    "skip": {"overlap": [NAN, NAN, 0.0], "hd95": [NAN, NAN, NAN]},
}


@pytest.mark.parametrize("policy", sorted(POLICY_TABLE))
def test_empty_policy_table(policy):
    pred, gt = _label_maps()
    want = POLICY_TABLE[policy]
    dice, iou = clean_overlap(torch.from_numpy(pred), torch.from_numpy(gt), 5, policy)
    nsd = nsd_per_class(pred, gt, [1, 2, 3, 4], 1.0, None, policy)
    hd = hd95(pred, gt, [1, 2, 3, 4], None, policy)
    for got in (dice[2:], iou[2:], nsd[1:]):
        np.testing.assert_array_equal(got, want["overlap"])
    np.testing.assert_array_equal(hd[1:], want["hd95"])
    # class 1 (in both) is the plain score under every policy
    assert dice[1] == pytest.approx(2 * 30 / 72) and iou[1] == pytest.approx(30 / 42)
    assert nsd[0] == pytest.approx(normalized_surface_dice(pred == 1, gt == 1, 1.0)) and np.isfinite(hd[0])


def test_clean_overlap_is_the_eps_rule_under_policy_one():
    """``one`` is LVM-Med's eps = 1e-6 rule without the eps: equal to 1e-6 wherever eps is defined."""
    rng = np.random.default_rng(3)
    for _ in range(10):
        pred, gt = (torch.from_numpy(rng.integers(0, 4, (30, 30)) * (rng.random((30, 30)) < 0.3)) for _ in range(2))
        exact, eps = clean_overlap(pred, gt, 5, "one"), volume_overlap(pred, gt, 5)
        for a, b in zip(exact, eps):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_skipped_cases_leave_the_mean_and_policy_one_counts_them():
    pred, gt = _label_maps()
    empty_case = (np.zeros_like(gt), np.zeros_like(gt))
    for policy, expect in [("one", 1.0), ("zero", 0.0), ("skip", None)]:
        rows = [clean_scores(p, t, 2, None, True, 1.0, policy) for p, t in [(pred == 1, gt == 1), empty_case]]
        m, undefined = summarize_clean([{k: v.astype(np.float64) for k, v in r.items()} for r in rows], ["background", "object"])
        first = rows[0]
        for name in ("dice", "iou", "nsd"):
            want = first[name][1] if expect is None else (first[name][1] + expect) / 2
            assert m[f"{name}_clean"] == pytest.approx(want), (policy, name)
        assert m["hd95_clean"] == pytest.approx(first["hd95"][1] / (2 if policy == "one" else 1))
        assert undefined["hd95_clean"] == (0 if policy == "one" else 1)


def test_apply_empty_policy_rejects_unknown_names():
    with pytest.raises(ValueError, match="empty_policy 'nan'"):
        apply_empty_policy(np.zeros(2), np.ones(2, bool), np.ones(2, bool), "nan")


def test_clean_scores_use_the_volume_spacing():
    gt = np.zeros((6, 20, 20), np.uint8)
    gt[2:4, 5:15, 5:15] = 1
    pred = np.roll(gt, 1, axis=0)
    row = clean_scores(pred, gt, 2, [3.0, 1.0, 1.0], False, 2.0, "one")
    assert row["nsd"][1] == pytest.approx(deepmind_nsd(pred == 1, gt == 1, (3.0, 1.0, 1.0), 2.0), abs=1e-9)
    assert row["nsd"][1] < clean_scores(pred, gt, 2, None, False, 2.0, "one")["nsd"][1]
    assert "nsd" not in clean_scores(pred, gt, 2, None, False, None, "one")


# -- settings and results ----------------------------------------------------------------------------

def _smoke_task(**seg2d):
    from lvmbench.spec import TaskSpec, deep_merge
    from lvmbench.tasks import get_task

    spec = get_task("kvasir_seg").for_suite("smoke")
    out = TaskSpec.model_validate(deep_merge(spec.model_dump(exclude={"folder"}), {"protocols": {"seg2d": seg2d}}))
    out.folder = spec.folder
    return out.settings("seg2d")


def test_settings_are_typed():
    from lvmbench.errors import UserError

    hp = _smoke_task()
    assert (hp.empty_policy, hp.nsd_tolerance_mm) == ("one", 2.0)
    assert _smoke_task(empty_policy="skip", nsd_tolerance_mm=1).nsd_tolerance_mm == 1.0
    assert _smoke_task(nsd_tolerance_mm=None).nsd_tolerance_mm is None
    for bad, message in [({"empty_policy": "ones"}, "did you mean 'one'"), ({"nsd_tolerence_mm": 1.0}, "did you mean 'nsd_tolerance_mm'"),
                         ({"nsd_tolerance_mm": "2"}, "valid number"), ({"nsd_tolerance_mm": 0}, "greater than 0")]:
        with pytest.raises(UserError, match=message):
            _smoke_task(**bad)


def _run_tiny(task_id: str, protocol: str, synth_root, cache_dir, **settings):
    """One tiny unit through the protocol (32 px, one epoch), as test_seg_protocols runs them."""
    import copy

    from lvmbench.data.task_data import load_task_data
    from lvmbench.encoders import create_encoder
    from lvmbench.protocols.base import PROTOCOLS, RunContext
    from lvmbench.spec import RunUnit, TaskSpec, deep_merge
    from lvmbench.tasks import get_task

    spec = get_task(task_id).for_suite("smoke")
    override = {"preprocess": {"size": 32}, "protocols": {protocol: {"epochs": 1, "batch_size": 8, "hd95": False, **settings}}}
    task = TaskSpec.model_validate(deep_merge(spec.model_dump(exclude={"folder"}), override))
    task.folder = spec.folder
    enc, ident = create_encoder("resnet18", seed=0)
    ctx = RunContext(
        unit=RunUnit(suite="smoke", task_id=task.id, protocol=protocol, encoder="resnet18", weights_sha256=ident.weights_sha256),
        task=task, data=load_task_data(task, synth_root), encoder_identity=ident, make_encoder=lambda: copy.deepcopy(enc),
        settings=task.settings(protocol), device=torch.device("cpu"), cache_dir=cache_dir, run=RunOptions(progress=False, workers=0))
    return PROTOCOLS.get(protocol)().run(ctx)


@pytest.mark.usefixtures("one_thread")
def test_tiny_units_record_nsd_and_conventions(synth_root, cache_dir):
    """2D (pixels) and slice-wise 3D with out-of-distribution sites (millimetres): nsd_clean per set,
    the per-case values it is the mean of, and the conventions it was measured under."""
    out = _run_tiny("kvasir_seg", "seg2d", synth_root, cache_dir, empty_policy="skip", nsd_tolerance_mm=3.0)
    # the reported dice states the paper's rule; the *_clean scores state the task's empty_policy
    assert out.extra["conventions"] == {"empty_policy": "one", "metric_definition": "paper-per-image-eps",
                                        "clean_empty_policy": "skip", "nsd_tolerance": "3 px", "nsd_surface": NSD_SURFACE}
    per_case = [r["nsd_clean"] for r in out.per_case]
    assert all(v is not None and 0 <= v <= 1 for v in per_case)  # every synthetic polyp image has a polyp
    assert out.metrics["nsd_clean"] == pytest.approx(np.mean(per_case), abs=1e-5)

    out3 = _run_tiny("prostate_ood", "seg3d", synth_root, cache_dir)
    assert out3.extra["conventions"]["nsd_tolerance"] == "2 mm" and out3.extra["conventions"]["clean_empty_policy"] == "one"
    for key in ("nsd_clean", "nsd_clean_runmc", "nsd_clean_bidmc", "nsd_clean_hk"):
        assert 0.0 <= out3.metrics[key] <= 1.0, key

    none = _run_tiny("kvasir_seg", "seg2d", synth_root, cache_dir, nsd_tolerance_mm=None)
    assert "nsd_clean" not in none.metrics and "nsd_tolerance" not in none.extra["conventions"]


@pytest.mark.usefixtures("one_thread")  # 10 s on one thread, several times that on two busy cores
def test_smoke_segmentation_result_records_nsd_and_policy(tmp_path, monkeypatch, capsys):
    """``lvmbench eval --encoder resnet18 --suite smoke --tasks kvasir_seg``: the result has
    ``nsd_clean`` (the mean of its per-case values), the resolved settings and the conventions."""
    import json

    from cli_helpers import cli

    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "kvasir_seg",
                       "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-progress")
    assert code == 0, err
    (path,) = (tmp_path / "r").rglob("seg2d-s0.json")
    rec = json.loads(path.read_text(encoding="utf-8"))
    assert 0.0 <= rec["metrics"]["nsd_clean"] <= 1.0
    per_case = [r["nsd_clean"] for r in rec["per_case"] if r["split"] == "test"]
    assert rec["metrics"]["nsd_clean"] == pytest.approx(np.mean(per_case), abs=1e-5)
    assert rec["hyperparameters"]["empty_policy"] == "one" and rec["hyperparameters"]["nsd_tolerance_mm"] == 2.0
    conv = rec["extra"]["conventions"]
    assert conv["clean_empty_policy"] == "one" and conv["nsd_tolerance"] == "2 px" and "DeepMind" in conv["nsd_surface"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in conv.items())
