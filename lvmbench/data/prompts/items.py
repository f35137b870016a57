"""One prompted item (an image, or one slice of a volume) as stored in a prompt file: no drawing,
no torch, so reading and hashing prompt files stays light."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DIGITS = 4  # coordinates are stored (and used) rounded to this many decimals


@dataclass
class ItemPrompt:
    """The prompt of one image (``slice`` None) or one slice of a volume, at the rule's grid.

    ``box``: xyxy or None (no box, or not prompted); for ``redraw`` training items the base box the
    jitter is drawn around at every use. ``empty``: the object is absent here. ``prompted``: False
    when the empty rule leaves the item out (no prompt, no training, no score)."""

    case: str
    slice: int | None = None
    box: list[float] | None = None
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    empty: bool = False
    prompted: bool = True

    def key(self) -> tuple[str, int]:
        return (self.case, -1 if self.slice is None else self.slice)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"case": self.case}
        if self.slice is not None:
            out["slice"] = self.slice
        out["box"] = None if self.box is None else [round(float(v), DIGITS) for v in self.box]
        if self.points:
            out["points"] = [[round(float(x), DIGITS), round(float(y), DIGITS)] for x, y in self.points]
            out["labels"] = [int(v) for v in self.labels]
        if self.empty:
            out["empty"] = True
        if not self.prompted:
            out["prompted"] = False
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ItemPrompt:
        return cls(
            case=str(d["case"]), slice=d.get("slice"), box=None if d.get("box") is None else [float(v) for v in d["box"]],
            points=[[float(x), float(y)] for x, y in d.get("points", [])], labels=[int(v) for v in d.get("labels", [])],
            empty=bool(d.get("empty", False)), prompted=bool(d.get("prompted", True)),
        )
