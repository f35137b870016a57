"""torchvision's Faster R-CNN around an ``EncoderBody`` + torchvision's FPN.

Settings follow mmdet's ``faster-rcnn_r50_fpn`` (LVM-Med's detector): anchors ``anchor_scale`` x stride
(8 -> 32..512 px) with ratios 0.5/1/2 on P2..P6, RPN 2000 -> 1000 proposals per image when training
and 1000 -> 1000 when testing, 512 RoIs per image with 25% positives, 7x7 RoIAlign on P2..P5, two
``box_fc``-d FC layers (1024) on ``fpn_channels`` (256), score threshold 0.05, NMS 0.5, 100 detections per image. Remaining differences to
mmdet: smooth-L1 instead of L1 box losses and RoIAlign without the half-pixel offset.

Images arrive resized and normalised by the protocol, so the model's transform only pads them into
a batch (multiples of 32); boxes come back in input pixels.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from lvmbench.encoders.base import Encoder
from lvmbench.protocols.det import BACKENDS, DetectorBackend
from lvmbench.protocols.det.body import EncoderBody
from lvmbench.protocols.settings import DetectionSettings


class EncoderFPN(nn.Module):
    """Body + FPN with a max-pooled P6, as torchvision's ``BackboneWithFPN`` (same key names)."""

    def __init__(self, body: EncoderBody, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


class PadOnly(GeneralizedRCNNTransform):
    """Batches already-normalised, already-resized images (pads to a multiple of 32); no rescaling."""

    def __init__(self, size_divisible: int = 32):
        super().__init__(min_size=1, max_size=1, image_mean=[0.0], image_std=[1.0], size_divisible=size_divisible)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def resize(self, image, target=None):
        return image, target


@BACKENDS.register("torchvision")
class TorchvisionBackend(DetectorBackend):
    name = "torchvision"

    def build(self, encoder: Encoder, num_classes: int, hp: DetectionSettings) -> nn.Module:
        body = EncoderBody(encoder)
        scale = hp.anchor_scale
        strides = (*body.strides, body.strides[-1] * 2)
        anchors = AnchorGenerator(sizes=tuple((scale * s,) for s in strides), aspect_ratios=((0.5, 1.0, 2.0),) * len(strides))
        fc = hp.box_fc
        ch = hp.fpn_channels
        model = FasterRCNN(
            EncoderFPN(body, ch),
            num_classes=None,
            rpn_anchor_generator=anchors,
            box_head=TwoMLPHead(ch * 7 * 7, fc),
            box_predictor=FastRCNNPredictor(fc, num_classes + 1),  # + background
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
            rpn_pre_nms_top_n_train=2000,
            rpn_post_nms_top_n_train=hp.rpn_proposals_train,
            rpn_pre_nms_top_n_test=1000,
            rpn_post_nms_top_n_test=hp.rpn_proposals_test,
            box_batch_size_per_image=hp.rois_per_image,
            box_score_thresh=0.05,
            box_nms_thresh=0.5,
            box_detections_per_img=100,
        )
        model.transform = PadOnly()
        return model

    def body(self, model: nn.Module) -> EncoderBody:
        return model.backbone.body

    def losses(self, model, images, targets):
        return model(images, [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets])

    @torch.no_grad()
    def predict(self, model, images):
        out = model(images)
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - 1} for o in out]
