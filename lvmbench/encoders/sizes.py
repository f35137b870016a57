"""Which image sizes an encoder ran at, recorded in every result (``hparams.encoder_input_size``).

A transformer built for 224 px runs at the task's size (position embeddings interpolated), so the
size it actually saw is part of what a number means. A forward pre-hook on the encoder's first
convolution (the stem), or its patch embedding for a transformer, sees every input, whichever method a protocol calls.
"""

from __future__ import annotations

from torch import nn


def track_input_sizes(encoder: nn.Module, seen: set[tuple[int, int]]) -> nn.Module:
    """Add the (H, W) of every input of ``encoder`` to ``seen``; returns the encoder."""
    # a transformer's patch embedding sees the input before any padding to a multiple of the patch
    first = next((m for n, m in encoder.named_modules() if n.endswith("patch_embed")), None)
    first = first or next((m for m in encoder.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        first.register_forward_pre_hook(lambda _m, args: seen.add((int(args[0].shape[-2]), int(args[0].shape[-1]))))
    return encoder


def size_record(seen: set[tuple[int, int]]) -> list[list[int]]:
    """The distinct sizes, sorted; many (keep-ratio detection batches) shrink to the smallest and largest."""
    sizes = sorted(seen)
    return [list(s) for s in (sizes if len(sizes) <= 4 else [sizes[0], sizes[-1]])]
