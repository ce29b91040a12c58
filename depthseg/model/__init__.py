"""The DepthSeg model: torch + timm only, no I/O beyond a local weights file, no Ray.

The teacher (:mod:`depthseg.model.teacher`, Hugging Face ``transformers``) is not re-exported
here: import it explicitly where chips are prepared. Names are imported on first use (the
package convention, :mod:`depthseg._lazy`).
"""

from typing import TYPE_CHECKING

from depthseg._lazy import lazy_exports

if TYPE_CHECKING:
    from depthseg.model.baseline import DeepLabV3Baseline
    from depthseg.model.config import EncoderConfig, ModelConfig
    from depthseg.model.depthseg import DepthSeg, DepthSegOutput, build_model, normalize
    from depthseg.model.encoder import (
        Encoder,
        count_parameters,
        fit_to_patch,
        load_encoder_weights,
    )
    from depthseg.model.losses import DepthSegLoss, LossParts

_WHERE = {
    "DeepLabV3Baseline": "baseline",
    "EncoderConfig": "config", "ModelConfig": "config",
    "DepthSeg": "depthseg", "DepthSegOutput": "depthseg", "build_model": "depthseg",
    "normalize": "depthseg",
    "Encoder": "encoder", "count_parameters": "encoder", "fit_to_patch": "encoder",
    "load_encoder_weights": "encoder",
    "DepthSegLoss": "losses", "LossParts": "losses",
}

__all__ = [
    "DeepLabV3Baseline",
    "DepthSeg",
    "DepthSegLoss",
    "DepthSegOutput",
    "Encoder",
    "EncoderConfig",
    "LossParts",
    "ModelConfig",
    "build_model",
    "count_parameters",
    "fit_to_patch",
    "load_encoder_weights",
    "normalize",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
