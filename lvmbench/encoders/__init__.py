"""Encoder registry: ``create_encoder(name, weights=PATH)`` -> (Encoder, EncoderIdentity).

Names resolve in this order: registered names (``lvmmed-r50``, ``lvmmed-vitb``, plugins from the
``lvmbench.encoders`` entry point group), ``torchvision/<arch>`` and ``timm/<name>`` prefixes, bare
torchvision ResNet names, then any timm model name. Nothing is downloaded: without ``weights`` the
encoder is randomly initialised (seeded) and named ``random-init`` in results.

The embedding's pooling (``Encoder.pooling``, recorded as ``EncoderIdentity.pooling``) is, first
to last: the caller's ``pooling=``, the one a ``lvmbench pretrain`` checkpoint records in its
safetensors metadata (the pooling its objective trained), the adapter's default.
"""

from __future__ import annotations

from lvmbench.kit.lazy import lazy_attributes

# The names load with their module on first use: importing the package (or its light parts, such
# as a name check from the facts cache) costs no torch; ``create_encoder`` does.
_WHERE = {
    "create_encoder": "build", "trained_pooling": "build", "weights_identity": "build",
    "POOLINGS": "base", "Encoder": "base", "EncoderIdentity": "base", "FeatureInfo": "base", "InputSpec": "base",
    "ENCODERS": "registry", "RANDOM_INIT": "registry", "Builder": "registry", "_generic": "registry", "_unknown": "registry",
    "is_known": "registry", "unknown_encoder": "registry",
    "encoder_kind": "kinds", "released_weights": "pretrained", "PRESETS": "pretrained",
}


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
