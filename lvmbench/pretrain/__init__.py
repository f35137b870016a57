"""Self-supervised pretraining of encoders (LVM-Med graph matching, MLVICX) producing checkpoints
that ``lvmbench eval --weights`` reads unchanged."""
