"""What a self-supervised run is doing while it runs (solo-learn / DINO / VICReg practice).

- ``embedding``: per-dimension spread and effective rank of a batch of embeddings; collapse flag;
- ``knn``: online kNN accuracy of the encoder on a labelled task (train split = bank, validation
  split = queries; never a test split);
- ``record``: the interval summary (loss terms, objective diagnostics, throughput) written as
  ``metrics.jsonl`` beside ``pretrain.json`` and printed as one line per interval;
- ``session``: what the trainer calls (``Monitors``);
- ``plot``: ``lvmbench pretrain plot RUN`` (matplotlib).
"""
