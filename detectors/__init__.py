"""CenterPoint: head, targets, losses, decoding and NMS, the assembled detector, its experiment schema,
training and evaluation.

    from detectors import CenterPoint
    model = CenterPoint.from_checkpoint("runs/cpu/checkpoint.pt")
    detections = model.predict([points])          # per cloud {'boxes': (K, 9), 'scores', 'labels'}
"""
from detectors.centerpoint import CenterPoint, ModelConfig
from detectors.evaluation import evaluate
from detectors.experiment import CenterPointConfig, load_centerpoint_config
from detectors.training import train

__all__ = ["CenterPoint", "CenterPointConfig", "ModelConfig", "evaluate", "load_centerpoint_config", "train"]
