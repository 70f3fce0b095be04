"""Non-maximum suppression: boxes (``nms``) and human poses by keypoint similarity (OKS)."""

from .box_nms import nms
from .oks_nms import COCO_SIGMAS, oks_iou, oks_nms, soft_oks_nms

__all__ = ["COCO_SIGMAS", "nms", "oks_iou", "oks_nms", "soft_oks_nms"]
