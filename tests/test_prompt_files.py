"""Prompt files (lvmbench/data/prompts/files.py, transfer.py; `lvmbench data prompts`): round trip,
SAM-Med2D's JSON both ways, imported prompts checked against the masks in one line each, every
encoder reading the same prompts, and what of them a result's identity holds."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cli_helpers import cli, the_line

from lvmbench.data.prompts import files as pf
from lvmbench.data.prompts.items import ItemPrompt
from lvmbench.data.prompts.rules import PromptRule
from lvmbench.data.prompts.transfer import check_items, read_sam_med2d, sam_med2d_doc
from lvmbench.errors import UserError
from lvmbench.spec import RunOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def head(rule=None, seed=0):
    rule = rule or PromptRule.model_validate({"preset": "lvmmed"})
    key = pf.draw_key(rule, [1], 64, "nearest")
    return pf.header(task="t", suite="smoke", seed=seed, origin="drawn by lvmbench", key=key, rule=rule, classes=[1], image_size=64)


def items(n=3, shift=0.0):
    return [ItemPrompt(case=f"c{i}", box=[1.0 + shift, 2.0, 30.5, 40.25], points=[[5.0, 6.0]], labels=[1]) for i in range(n)] + [ItemPrompt(case="e", slice=3, empty=True, prompted=False)]


def test_round_trip_and_merge_states(tmp_path):
    path = tmp_path / "p.json"
    doc = pf.make_doc(head(), {"test": items(), "train": items(2)})
    pf.write_prompt_file(path, doc)
    assert path.read_bytes() == pf.doc_bytes(doc), "the file is the document's bytes (its sha256 is the result's)"
    back = pf.parts_of(pf.read_prompt_file(path), path)
    assert [it.to_json() for it in back["test"]] == [it.to_json() for it in sorted(items(), key=ItemPrompt.key)]
    assert pf.merge_drawn(path, head(), {"test": items()})[1] == "same"
    assert pf.merge_drawn(path, head(), {"test": items(5)})[1] == "extended"
    merged, state = pf.merge_drawn(path, head(), {"test": items(1, shift=3.0)})
    assert state == "redrawn" and len(merged["parts"]["test"]) == 4 and merged["parts"]["test"][0]["box"][0] == 4.0
    assert pf.merge_drawn(path, head(seed=1), {"test": items()})[1] == "new", "another seed's file is not merged into"
    other = tmp_path / "mine.json"
    other.write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match="refusing to overwrite a file lvmbench did not write"):
        pf.write_prompt_file(other, doc)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "x"}', encoding="utf-8")
    with pytest.raises(UserError, match="not an lvmbench prompt file") as e:
        pf.read_prompt_file(bad)
    assert "\n" not in str(e.value)


def test_sam_med2d_json_both_ways(tmp_path):
    its = [ItemPrompt(case="a.png", box=[10.0, 20.0, 30.0, 40.0], points=[[12.0, 22.0]], labels=[1]),
           ItemPrompt(case="vol", slice=4, box=[1.0, 2.0, 3.0, 4.0], points=[[2.0, 3.0], [9.0, 9.0]], labels=[1, 0])]
    doc = sam_med2d_doc(its, 0.5)  # a 512 px rule grid exported at SAM-Med2D's 256
    assert doc["a.png"] == {"boxes": [[5.0, 10.0, 15.0, 20.0]], "point_coords": [[6.0, 11.0]], "point_labels": [1]}
    assert doc["vol#4"]["point_labels"] == [1, 0]
    # SAM-Med2D's test.py squeezes a batch of one: one point -> [[x, y]] / [l]; k points -> [[[x, y], ...]] / [[...]]
    doc["vol#4"] = {"boxes": [[0.5, 1.0, 1.5, 2.0]], "point_coords": [[[1.0, 1.5], [4.5, 4.5]]], "point_labels": [[1, 0]]}
    f = tmp_path / "256_prompt.json"
    f.write_text(json.dumps(doc), encoding="utf-8")
    back = read_sam_med2d(f, {"a.png": ("a.png", -1), "vol#4": ("vol", 4)}, 2.0)
    assert [it.to_json() for it in back] == [it.to_json() for it in its]
    with pytest.raises(UserError, match="unknown case id 'a.png'"):
        read_sam_med2d(f, {"vol#4": ("vol", 4)}, 2.0)


def test_imported_prompts_are_checked_against_the_masks_one_line_each(tmp_path):
    obj = np.zeros((32, 32), bool)
    obj[10:20, 10:20] = True
    objects = {("a", -1): obj, ("b", -1): obj, ("empty", -1): np.zeros((32, 32), bool)}
    good = [ItemPrompt(case="a", box=[8.0, 8.0, 21.0, 21.0], points=[[15.0, 15.0], [2.0, 2.0]], labels=[1, 0]), ItemPrompt(case="b", box=[19.0, 19.0, 30.0, 30.0])]
    check_items(tmp_path / "f.json", "test", good, dict(objects))  # an empty slice may go unprompted
    cases = {
        "misses its object": [ItemPrompt(case="a", box=[0.0, 0.0, 5.0, 5.0]), good[1]],
        "positive point (3, 3) of 'a' (test) lies outside the object's mask": [ItemPrompt(case="a", box=good[0].box, points=[[3.0, 3.0]], labels=[1]), good[1]],
        "negative point (15, 15) of 'a' (test) lies on the object": [ItemPrompt(case="a", box=good[0].box, points=[[15.0, 15.0]], labels=[0]), good[1]],
        "lies outside the 32 px grid": [ItemPrompt(case="a", box=good[0].box, points=[[40.0, 1.0]], labels=[0]), good[1]],
        "unknown case id 'zz'": [*good, ItemPrompt(case="zz", box=[0.0, 0.0, 1.0, 1.0])],
        "no prompt for 'b' of part 'test'": [good[0]],
        "'a' has two prompts": [good[0], good[0], good[1]],
    }
    for needle, its in cases.items():
        with pytest.raises(UserError) as e:
            check_items(tmp_path / "f.json", "test", its, dict(objects))
        msg = str(e.value)
        assert needle in msg and msg.startswith(str(tmp_path / "f.json")) and "fix:" in msg and "\n" not in msg, msg


def prompt_file_of(splits: Path, task: str) -> list[Path]:
    return sorted((splits / "smoke" / f"{task}.prompts").glob("*.json"))


def test_command_writes_exports_and_imports_and_every_encoder_reads_the_same_prompts(monkeypatch, capsys, tmp_path, synth_root, cache_dir):
    from lvmbench.runner import EvalRequest, run

    splits = tmp_path / "splits"
    base = ["data", "prompts", "kvasir_seg", "--suite", "smoke", "--data-root", str(synth_root)]
    code, out, err = cli(monkeypatch, capsys, *base)
    assert code == 0 and "drawn prompts (lvmmed, seed 0)" in out, err
    [drawn] = prompt_file_of(splits, "kvasir_seg")
    written = drawn.read_bytes()
    doc = json.loads(written)
    assert doc["frame"] == 256 and doc["rule"]["preset"] == "lvmmed" and set(doc["parts"]) == {"train", "val", "test"}

    # two encoders, one task: the same prompts, read from the file the command wrote (unchanged)
    recs = {}
    for enc in ("resnet18", "test_vit"):
        req = EvalRequest(encoder=enc, suite="smoke", tasks=["kvasir_seg"], protocols=["seg2d-prompt-zeroshot"], data_root=synth_root,
                          results=tmp_path / "r", cache_dir=cache_dir, run=RunOptions(progress=False, workers=0))
        assert run(req, log=lambda s: None).done
        recs[enc] = json.loads(next((tmp_path / "r").rglob(f"*{enc}*/**/seg2d-prompt-zeroshot-s0.json")).read_text(encoding="utf-8"))
    boxes = {e: {c["case"]: c["box"] for c in r["per_case"]} for e, r in recs.items()}
    assert boxes["resnet18"] == boxes["test_vit"] and len(boxes["resnet18"]) == len(doc["parts"]["test"])
    want = {d["case"]: [round(v, 2) for v in d["box"]] for d in doc["parts"]["test"]}
    assert boxes["resnet18"] == want
    assert {r["hyperparameters"]["prompt_sha256"] for r in recs.values()} == {pf.sha256_of(drawn)} and drawn.read_bytes() == written
    r = recs["resnet18"]
    conv = r["extra"]["conventions"]
    assert {k: conv[k] for k in ("prompt_preset", "empty_policy", "metric_definition")} == {"prompt_preset": "lvmmed", "empty_policy": "random-box,empty=1", "metric_definition": "dice-per-image@16px"}
    assert conv["clean_empty_policy"] == "one"  # the native-resolution scores' own rule, beside the prompts'

    assert r["extra"]["baseline"]["predictor"].startswith("the prompt box filled") and r["extra"]["baseline"]["value"] > 0.3

    # export as SAM-Med2D's JSON, import it back: the same test boxes, now imported
    out_file = tmp_path / "256_prompt.json"
    code, out, err = cli(monkeypatch, capsys, *base, "--export", str(out_file), "--format", "sam-med2d")
    assert code == 0 and out_file.is_file(), err
    exported = json.loads(out_file.read_text(encoding="utf-8"))
    assert set(exported) == set(want) and all(len(v["boxes"]) == 1 for v in exported.values())
    code, out, err = cli(monkeypatch, capsys, *base, "--export", str(out_file), "--format", "sam-med2d")
    assert code != 0 and "the export file exists" in the_line(err, "exists")
    code, out, err = cli(monkeypatch, capsys, *base, "--import", str(out_file))
    assert code == 0 and "imported 9 prompt(s) (test)" in out, err
    imported = [p for p in prompt_file_of(splits, "kvasir_seg") if p.name.endswith("-imported.json")]
    assert len(imported) == 1
    got = {d["case"]: d["box"] for d in json.loads(imported[0].read_text(encoding="utf-8"))["parts"]["test"]}
    assert got == {d["case"]: d["box"] for d in doc["parts"]["test"]}

    # a bad file is one line and replaces nothing
    before = imported[0].read_bytes()
    k = next(iter(exported))
    exported[k]["boxes"] = [[0, 0, 2, 2]]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(exported), encoding="utf-8")
    code, out, err = cli(monkeypatch, capsys, *base, "--import", str(bad), "--force")
    line = the_line(err, "misses its object")
    assert code != 0 and line.startswith(f"error: {bad}: the box of '{k}' (test) misses its object")
    assert imported[0].read_bytes() == before
    code, out, err = cli(monkeypatch, capsys, *base, "--preset", "lvmed")
    assert code != 0 and "lvmmed" in the_line(err, "--preset")


def test_identity_holds_the_imported_file_and_the_decoder_bytes_not_its_path(tmp_path):
    from lvmbench.identity import spec_dict
    from lvmbench.protocols.seg_prompt import Seg2DPrompt
    from lvmbench.spec import RunUnit
    from lvmbench.tasks import get_task

    task = get_task("kvasir_seg").for_suite("smoke")
    hp = task.settings("seg2d-prompt")
    unit = RunUnit(suite="smoke", task_id="kvasir_seg", protocol="seg2d-prompt", encoder="resnet18", weights_sha256="0" * 64)
    ident = lambda s: json.dumps(spec_dict(task, unit, s), sort_keys=True)

    a, b = tmp_path / "a" / "dec.pth", tmp_path / "b" / "dec.pth"
    for p in (a, b):
        p.parent.mkdir()
        torch.save({"mask_decoder.x": torch.zeros(1)}, p)
    sa, sb = Seg2DPrompt.plan_settings(hp, {"decoder_weights": str(a)}), Seg2DPrompt.plan_settings(hp, {"decoder_weights": str(b)})
    assert sa.decoder_weights != sb.decoder_weights and ident(sa) == ident(sb), "the same decoder bytes at two paths: one identity"
    torch.save({"mask_decoder.x": torch.ones(1)}, b)
    assert ident(Seg2DPrompt.plan_settings(hp, {"decoder_weights": str(b)})) != ident(sa)

    drawn = ident(hp)
    assert '"prompt_source": "drawn"' in drawn
    imp = pf.imported_path("smoke", "kvasir_seg", pf.draw_key(hp.prompt, hp.prompt_classes, hp.image_size, hp.resize))
    pf.write_prompt_file(imp, pf.make_doc(head(hp.prompt), {"test": items()}))
    one = ident(hp)
    assert one != drawn and pf.sha256_of(imp) in one
    pf.write_prompt_file(imp, pf.make_doc(head(hp.prompt), {"test": items(shift=1.0)}))
    assert ident(hp) not in (one, drawn), "another imported file, another identity"
    other = hp.model_copy(update={"prompt": PromptRule.model_validate({"preset": "medsam"})})
    assert ident(other) != drawn and '"prompt_source": "drawn"' in ident(other), "the import belongs to its rule only"


def test_correction_clicks_record_dice_after_each_round():
    from lvmbench.protocols.prompt_iterate import iterate
    from lvmbench.protocols.prompt_scores import PromptSet
    from lvmbench.protocols.seg_data import Prepared

    targets = torch.zeros(2, 16, 16, dtype=torch.uint8)
    targets[0, 2:10, 2:10] = 1
    targets[1, 5:15, 3:8] = 1
    prep = Prepared(cases=[SimpleNamespace(id="a"), SimpleNamespace(id="b")], images=[], masks=[])
    ps = PromptSet(torch.zeros(2, 1), targets, torch.zeros(2, 4), [0, 1], [0, 0], prep, frame=64)
    seen = []

    def predict(points, labels):  # a "model" that paints a 3 px square at every positive click
        seen.append(None if points is None else points.clone())
        out = torch.full((2, 16, 16), -1.0)
        if points is not None:
            for j in range(2):
                for (x, y), lab in zip(points[j] / 4, labels[j]):
                    if lab == 1:
                        out[j, int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 1.0
        return out

    rule = PromptRule.model_validate({"iterations": 3})
    _, curve = iterate(predict, ps, rule, seed=0)
    assert len(curve) == 4 and curve[0] == pytest.approx(0.0, abs=1e-6) and curve[1] > 0 and curve == sorted(curve), "Dice after 0..3 clicks, rising"
    assert seen[1].shape == (2, 1, 2) and seen[3].shape == (2, 3, 2)
    for j in range(2):  # every click was a positive one inside the object (rule grid = 4 x mask grid)
        for x, y in seen[3][j] / 4:
            assert targets[j, int(y), int(x)] == 1
    assert iterate(predict, ps, rule, seed=0)[1] == curve, "deterministic"


def test_training_clicks_are_drawn_from_the_ground_truth_with_their_labels():
    from lvmbench.protocols.prompt_iterate import training_clicks

    t = torch.zeros(6, 16, 16, dtype=torch.uint8)
    t[:4, 3:9, 5:12] = 1
    t[5] = 1  # all object: only positive clicks possible; t[4] is empty: only negative ones
    counts = set()
    for s in range(30):
        pts, labels = training_clicks(t, 4, 4.0, torch.Generator().manual_seed(s))
        counts.add(pts.shape[1])
        again = training_clicks(t, 4, 4.0, torch.Generator().manual_seed(s))
        assert torch.equal(pts, again[0]) and torch.equal(labels, again[1])
        for j in range(6):
            for (x, y), lab in zip(pts[j] / 4, labels[j]):
                assert int(t[j, int(y), int(x)]) == int(lab), "a positive click on the object, a negative one off it"
        assert (labels[4] == 0).all() and (labels[5] == 1).all()
    assert counts == {0, 1, 2, 3, 4}


def test_points_and_correction_clicks_run_end_to_end(monkeypatch, tmp_path, synth_root, cache_dir):
    """Slice-wise, preset sam-med2d with one point and two correction rounds: trained with clicks,
    scored after each round, conventions naming what differs from the preset."""
    import lvmbench.runner.planner
    from lvmbench.runner import EvalRequest, run
    from lvmbench.tasks import get_task

    spec = get_task("mmwhs_ct").for_suite("smoke")
    block = {**spec.protocols["seg3d-prompt"], "epochs": 1, "prompt": {"preset": "sam-med2d", "points": 1, "iterations": 2}}
    spec = spec.model_copy(update={"protocols": {**spec.protocols, "seg3d-prompt": block}})
    monkeypatch.setattr(lvmbench.runner.planner, "select_tasks", lambda req: [spec])
    req = EvalRequest(encoder="resnet18", suite="smoke", tasks=["mmwhs_ct"], protocols=["seg3d-prompt"], data_root=synth_root,
                      results=tmp_path / "r", cache_dir=cache_dir, run=RunOptions(progress=False, workers=0))
    summary = run(req, log=lambda s: None)
    assert summary.done and not summary.failed, summary.failed
    r = json.loads(next((tmp_path / "r").rglob("seg3d-prompt-s0.json")).read_text(encoding="utf-8"))
    curve = r["extra"]["iteration_dice"]
    assert len(curve) == 3 and all(0 <= v <= 1 for v in curve)
    conv = r["extra"]["conventions"]
    assert {k: conv[k] for k in ("prompt_preset", "empty_policy", "metric_definition")} == {
        "prompt_preset": "sam-med2d+points+iterations", "empty_policy": "skip", "metric_definition": "iou-per-slice-mean-per-volume@16px,after-2-clicks"}
    assert r["counts"]["test_unprompted"] > 0, "sam-med2d skips slices without the object"
    [drawn] = prompt_file_of(tmp_path / "splits", "mmwhs_ct")
    doc = json.loads(drawn.read_text(encoding="utf-8"))
    assert all(len(it.get("points", [])) == 1 for it in doc["parts"]["test"] if it.get("prompted", True))
