"""The DepthSeg model: torch + timm only, no I/O beyond a local weights file, no Ray.

The teacher (:mod:`depthseg.model.teacher`, Hugging Face ``transformers``) is not imported
here: import it explicitly where chips are prepared.
"""

from depthseg.model.baseline import DeepLabV3Baseline
from depthseg.model.config import EncoderConfig, ModelConfig, TrainConfig
from depthseg.model.depthseg import DepthSeg, DepthSegOutput, build_model, normalize
from depthseg.model.encoder import Encoder, count_parameters, fit_to_patch, load_encoder_weights
from depthseg.model.losses import DepthSegLoss, LossParts

__all__ = [
    "DeepLabV3Baseline",
    "DepthSeg",
    "DepthSegLoss",
    "DepthSegOutput",
    "Encoder",
    "EncoderConfig",
    "LossParts",
    "ModelConfig",
    "TrainConfig",
    "build_model",
    "count_parameters",
    "fit_to_patch",
    "load_encoder_weights",
    "normalize",
]
