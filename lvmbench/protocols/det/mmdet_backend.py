"""mmdet 3.x Faster R-CNN R50-FPN (LVM-Med's detector) around an ``EncoderBody``.

The model is mmdet's own ``faster-rcnn_r50_fpn`` base config (from the installed package), with the
backbone replaced by ``LvmbenchEncoderBody`` (our Encoder's modules under ``backbone.``, so LVM-Med's
``backbone.``-prefixed ResNet-50 file matches key for key), the FPN's input channels taken from the
encoder, ``num_classes`` and anchor scale from the task. Images are normalised by the protocol;
mmdet's ``DetDataPreprocessor`` only pads them (multiples of 32) and fills the batch metadata.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from lvmbench.encoders.base import Encoder
from lvmbench.errors import UserError
from lvmbench.protocols.det import BACKENDS, DetectorBackend
from lvmbench.protocols.det.body import EncoderBody
from lvmbench.protocols.settings import DetectionSettings

_REGISTERED = False


def _mm() -> SimpleNamespace:
    """The mmdet and mmengine names this backend uses."""
    # optional (the [mmdet] extra, over a compiled mmcv) and seconds to import: loaded when a detection unit runs
    import mmdet.registry, mmdet.structures, mmdet.utils, mmengine.config, mmengine.structures  # noqa: E401

    return SimpleNamespace(MODELS=mmdet.registry.MODELS, register_all_modules=mmdet.utils.register_all_modules,
                           package=Path(mmdet.__file__).parent, Config=mmengine.config.Config,
                           DetDataSample=mmdet.structures.DetDataSample, InstanceData=mmengine.structures.InstanceData)


def _register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    mm = _mm()
    mm.register_all_modules(init_default_scope=True)
    # mmengine logs every parameter's initialiser at INFO; keep the console to warnings.
    logging.getLogger("mmengine").setLevel(logging.WARNING)
    mm.MODELS.register_module(name="LvmbenchEncoderBody", module=EncoderBody, force=True)
    _REGISTERED = True


def base_config_path() -> Path:
    path = _mm().package / ".mim" / "configs" / "_base_" / "models" / "faster-rcnn_r50_fpn.py"
    if not path.is_file():
        raise UserError("mmdet's faster-rcnn_r50_fpn base config is not installed", path=path, fix="install mmdet from a wheel (pip install 'mmdet>=3.3,<3.4')")
    return path


@BACKENDS.register("mmdet")
class MMDetBackend(DetectorBackend):
    name = "mmdet"

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            # RoIAlign and NMS are compiled mmcv ops: a stale build fails here, not mid-run
            import mmcv._ext, mmdet, mmengine  # noqa: F401, E401
        except Exception as e:  # ImportError, or an ABI error from a stale mmcv build
            return f"{e.__class__.__name__}: {str(e).splitlines()[0][:120]}"
        return None

    def build(self, encoder: Encoder, num_classes: int, hp: DetectionSettings) -> nn.Module:
        mm = _mm()
        _register()
        cfg = mm.Config.fromfile(str(base_config_path())).model
        cfg.data_preprocessor = dict(type="DetDataPreprocessor", mean=None, std=None, bgr_to_rgb=False, pad_size_divisor=32)
        cfg.backbone = dict(type="LvmbenchEncoderBody", encoder=encoder)
        cfg.rpn_head.anchor_generator.scales = [hp.anchor_scale]
        cfg.roi_head.bbox_head.num_classes = int(num_classes)
        cfg.train_cfg.rpn_proposal.max_per_img = hp.rpn_proposals_train
        cfg.train_cfg.rcnn.sampler.num = hp.rois_per_image
        cfg.test_cfg.rpn.max_per_img = hp.rpn_proposals_test
        cfg.roi_head.bbox_head.fc_out_channels = hp.box_fc
        ch = hp.fpn_channels
        cfg.neck.out_channels = cfg.rpn_head.in_channels = cfg.rpn_head.feat_channels = ch
        cfg.roi_head.bbox_roi_extractor.out_channels = cfg.roi_head.bbox_head.in_channels = ch
        body_channels = EncoderBody(encoder).channels
        cfg.neck.in_channels = body_channels
        model = mm.MODELS.build(cfg)
        # Initialise neck and heads as mmdet does; the backbone body has no init_weights of its
        # own, so mmengine does not descend into it and the encoder's weights stay as loaded.
        model.init_weights()
        return model

    def body(self, model: nn.Module) -> EncoderBody:
        return model.backbone

    def _data(self, model, images: list[torch.Tensor], targets=None) -> dict:
        mm = _mm()
        samples = []
        for i, img in enumerate(images):
            h, w = int(img.shape[-2]), int(img.shape[-1])
            ds = mm.DetDataSample(metainfo={"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0)})
            if targets is not None:
                gt = mm.InstanceData()
                gt.bboxes = targets[i]["boxes"].float()
                gt.labels = targets[i]["labels"].long()
                ds.gt_instances = gt
            samples.append(ds)
        return model.data_preprocessor({"inputs": list(images), "data_samples": samples}, training=targets is not None)

    def losses(self, model, images, targets):
        data = self._data(model, images, targets)
        raw = model.loss(data["inputs"], data["data_samples"])
        out = {}
        for k, v in raw.items():
            if "loss" not in k:
                continue  # accuracies and other logged values
            out[k] = sum(v) if isinstance(v, (list, tuple)) else v
        return out

    @torch.no_grad()
    def predict(self, model, images):
        data = self._data(model, images)
        res = model.predict(data["inputs"], data["data_samples"], rescale=True)
        return [{"boxes": r.pred_instances.bboxes, "scores": r.pred_instances.scores, "labels": r.pred_instances.labels} for r in res]
