"""SAM 3 concept segmentation: every instance of a noun phrase and/or exemplar boxes (``Segmentor.segment_text``).

Modules: :mod:`.conversion` (Meta's ``sam3.pt`` → transformers' ``Sam3Model``), :mod:`.tokenizer` (CLIP BPE laid
out as Meta's tokenizer), :mod:`.roi_align` (torchvision's RoI Align in plain torch), :mod:`.forward` (the detector
computed as Meta's ``Sam3Processor`` does), :mod:`.backend` (the runtime), :mod:`.request` and :mod:`.execute`
(the request type and how it runs). Nothing here imports torch until a SAM 3 model is used.
"""

from __future__ import annotations

from .request import ConceptRequest, TextPromptsUnsupportedError

__all__ = ["ConceptRequest", "TextPromptsUnsupportedError"]
