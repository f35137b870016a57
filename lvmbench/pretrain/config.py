"""``PretrainConfig``: every setting of a pretraining run (what ``pretrain.json`` records and
``--resume`` checks, except the ``RUNTIME`` fields, which may change between a run and its resume)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class PretrainConfig:
    data: list[str]
    objective: str = "graph-matching"
    encoder: str = "resnet50"
    weights: str | None = None
    # The pooled vector the objective trains and evaluation embeds (Encoder.poolings). The paper
    # average-pools the encoder's final feature map (for a ViT its token grid): "avg".
    pooling: str = "avg"
    image_size: int = 224
    batch_size: int = 256  # global, over all processes (the paper: 3200 for R50 on 16 GPUs)
    steps: int | None = None
    epochs: float | None = None
    lr: float = 2e-3
    lr_halvings: int = 4
    out: str = "pretrain-out"
    resume: bool = False
    seed: int = 0
    exclude: list[str] = field(default_factory=list)
    objective_options: dict = field(default_factory=dict)
    view_options: dict = field(default_factory=dict)  # --view KEY=VALUE: the two views' augmentation (views.ViewOptions)
    checkpoint_every: int = 500
    stop_at: int | None = None  # leave after this step (a job's time slice); --resume continues
    max_minutes: float | None = None  # leave after the step that passes this wall time; --resume continues
    workers: int = 4
    device: str | None = None
    amp: bool = True  # bf16 autocast, CUDA only
    cache_mb: int = 512
    progress: bool = True
    log_every: int = 1
    # Test splits whose images are dropped from the data (``exclusion``); None = the default rule
    # (every built-in suite whose data root holds a --data folder), [] = none.
    exclude_test_of: list[str] | None = None
    exclude_data_root: str | None = None  # data root of those suites (default: each suite's own)
    # Monitors (``monitors``): they only read, so they may change on --resume.
    monitor_tasks: list[str] = field(default_factory=list)
    monitor_every: int | None = None
    monitor_suite: str | None = None  # None: the one suite excluded from the data, else lvmmed
    monitor_data_root: str | None = None
    monitor_size: int | None = None
    monitor_k: int = 20

    # Fields that may change between a run and its --resume without breaking exactness.
    RUNTIME = (
        "resume", "checkpoint_every", "stop_at", "max_minutes", "workers", "device", "progress", "cache_mb", "log_every", "out",
        "monitor_tasks", "monitor_every", "monitor_suite", "monitor_data_root", "monitor_size", "monitor_k",
    )

    def identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}
