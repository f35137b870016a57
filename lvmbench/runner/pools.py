"""What a run loads once and every unit shares: each seed's encoder (each task's data: ``data_pool``)."""

from __future__ import annotations

from pathlib import Path

from lvmbench.encoders import create_encoder, is_known, unknown_encoder, weights_identity
from lvmbench.encoders.base import Encoder, EncoderIdentity
from lvmbench.encoders.channels import takes_channels
from lvmbench.encoders.kinds import encoder_kind
from lvmbench.encoders.pretrained import PRESETS
from lvmbench.paths import cache_root
from lvmbench.runner.facts import FactsFile
from lvmbench.runner.planner import plan_units
from lvmbench.runner.request import EvalRequest, Planned


class EncoderPool:
    """One loaded encoder per seed for the whole run; every unit gets a deep copy.

    Building an encoder and reading, hashing and loading its checkpoint cost seconds for a ResNet-50
    or ViT-B file, once per unit before; the copy a protocol trains is fresh either way. The seed
    matters only where the checkpoint leaves parameters at their (seeded) initialisation.

    It is also the loaded ``facts.EncoderFacts``: each fact it learns is stored in the cache
    (``facts.FactsFile``) for the commands that only check what is done.
    """

    def __init__(self, name: str, weights: Path | None, cache_dir: Path | None = None):
        self.name, self.weights = name, weights
        self._loaded: dict[int | tuple[int, int], tuple[Encoder, EncoderIdentity]] = {}
        self._sha: str | None = None
        self._cache_dir = cache_dir
        self._pending: dict[str, object] = {}

    def _store(self, facts: dict[str, object]) -> None:
        """Facts are filed under the weights' sha256: held until it is known, then written at once."""
        self._pending.update(facts)
        if self._sha is not None and self._pending:
            FactsFile(self._cache_dir or cache_root(), self.name, self._sha).put(self._pending)
            self._pending = {}

    def check_known(self) -> None:
        if not is_known(self.name):
            raise unknown_encoder(self.name)
        self._store({"known": True, "preset": self.name in PRESETS})

    def weights_sha256(self) -> str:
        if self._sha is None:
            self._sha = weights_identity(self.weights)
            self._store({})  # what was learnt before the sha256
        return self._sha

    def kind(self) -> str:
        kind = encoder_kind(self.name)
        self._store({"kind": kind})
        return kind

    def get(self, seed: int, channels: int | None = None) -> tuple[Encoder, EncoderIdentity]:
        # a plugin builder told the task's channel count builds one encoder per channel count
        key = (seed, channels) if channels is not None and takes_channels(self.name) else seed
        if key not in self._loaded:
            self._loaded[key] = create_encoder(self.name, self.weights, seed=seed, in_channels=channels)
        return self._loaded[key]

    def remember_info(self, seed: int, channels: int | None, info: dict) -> None:
        """``info`` of the encoder built for ``channels``: filed as the seed's when it is the seed's
        one encoder (a plugin told the channel count may build another per task)."""
        if channels is None or not takes_channels(self.name):
            self.weights_sha256()
            self._store({f"info:{seed}": info})

    def info(self, seed: int) -> dict:
        """What, beyond the weights, decides the encoder's outputs (its pooling): part of identity."""
        info = encoder_info(self.get(seed)[0])
        self._store({f"info:{seed}": info})
        return info


def encoder_info(encoder: Encoder) -> dict:
    pooling = getattr(encoder, "pooling", None)
    info = {"pooling": pooling} if pooling is not None else {}
    if getattr(encoder, "pyramid_kind", None):  # a ViT's dense pyramid: results of an older one are stale
        info["pyramid"] = encoder.pyramid_kind  # type: ignore[attr-defined]
    return info


def plan(req: EvalRequest) -> tuple[list[Planned], list[str]]:
    """``planner.plan_units`` with the encoder loaded as needed (its name, kind and weights)."""
    return plan_units(req, EncoderPool(req.encoder, req.weights, req.cache_dir))
