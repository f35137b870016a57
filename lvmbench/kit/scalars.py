"""Strict scalars and the strict base model shared by every typed setting.

Text is not a number ('fast', a quoted "0.001"), a bool is not a number, 1.5 is not an integer and
"yes" is not a bool; lists still become tuples where a pair is expected.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictStr

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Bool = StrictBool
Str = StrictStr
StrOrList = StrictStr | list[StrictStr]
PosInt = Annotated[int, Strict(), Field(gt=0)]
PosFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Fraction01 = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]


class StrictModel(BaseModel):
    """Unknown keys are errors; values are immutable once validated; defaults are validated too."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
