"""Prompts for SAM-style segmentation, drawn from ground-truth masks: the typed ``prompt:`` block
and its named presets (``rules``), box geometry (``boxes``), point prompts and correction clicks
(``clicks``), one image's or slice's prompt under a seed (``draw``) and the shared prompt files
(``files``, ``transfer``).

Everything here is pure geometry on numpy masks plus file handling: the prompt protocols
(``lvmbench.protocols.seg_prompt``) use it, and it never imports them.
"""

from lvmbench.data.prompts.rules import PRESETS, PromptRule

__all__ = ["PRESETS", "PromptRule"]
