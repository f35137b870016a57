"""The typed-model kit (ground floor): strict pydantic scalars and base model, the nested model at
an error's location, nearest-name suggestions and the one-line error for a bad setting.

Protocol settings (``lvmbench.protocols.settings``), reader options (``lvmbench.data.reader_options``)
and the pretrainer's options are all built from these pieces, so a typo or a bad value reads the
same everywhere: the file, the key, the value, the nearest valid name, the fix.
"""

from lvmbench.kit.errors import choice_msg, first_problem, model_at
from lvmbench.kit.scalars import (
    Bool,
    Float,
    Fraction01,
    Int,
    NonNegFloat,
    PosFloat,
    PosInt,
    Str,
    StrictModel,
    StrOrList,
)

__all__ = [
    "Bool", "Float", "Fraction01", "Int", "NonNegFloat", "PosFloat", "PosInt", "Str", "StrOrList", "StrictModel",
    "choice_msg", "first_problem", "model_at",
]
