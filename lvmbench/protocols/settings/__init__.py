"""Typed protocol settings: every key a task.yaml may set under ``protocols.<name>``.

Each protocol declares one pydantic model (type, range, default, one-line doc per key). A task's
``protocols`` section, and every suite profile merged into it, is validated against the model when
the task is loaded, so a typo (``epoch: 3``) or a bad value (``batch_size: 0``) is an error naming the
task, the key and the nearest valid name, never a silently ignored setting. ``resolve`` fills the
defaults that depend on the task (the selection metric, the scored classes), and the resolved model,
defaults included, is what a protocol reads and what its result records.

Shared pieces that published recipes need: learning-rate schedules (:class:`Schedule`), input
normalisation (:data:`Normalize`), augmentation on/off, and the validation metric that selects the
checkpoint (``select_metric``, default: the task's primary metric).
"""

from lvmbench.kit import model_at  # noqa: F401 (older imports of the kit's helper)
from lvmbench.protocols.settings.classification import (  # noqa: F401
    FinetuneSettings,
    KNNSettings,
    LinearSettings,
    RetrievalSettings,
    SimilarityQuerySettings,
)
from lvmbench.protocols.settings.common import (  # noqa: F401
    CLASSIFICATION_METRICS,
    HEAD_MODELS,
    NORMALIZE_DOC,
    TRANSFORMER_BLOCK,
    BnMode,
    FeatureSettings,
    HeadSettings,
    LinearHeadParams,
    MeanStd,
    MLPHeadParams,
    Normalize,
    NormalizeName,
    ProtocolSettings,
    Schedule,
    TverskyHeadParams,
    check_head_params,
    settings_error,
)
from lvmbench.protocols.settings.detection import DetectionSettings  # noqa: F401
from lvmbench.protocols.settings.segmentation import (  # noqa: F401
    PromptEval3DSettings,
    PromptEvalSettings,
    PromptSeg3DSettings,
    PromptSegSettings,
    Seg2DSettings,
    Seg3DSettings,
    Seg3DViTSettings,
    SegSettings,
    SegViTSettings,
)
