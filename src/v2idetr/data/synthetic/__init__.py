"""Synthetic lesion videos: the dataset every CPU experiment trains and measures on.

Two presets: ``ultrasound`` (B-mode-like speckled tissue with hypoechoic lesions) and
``colonoscopy`` (pink mucosa with folds, lumen, vessels, vignetting and moving specular highlights,
category 1 "polyp"). Ultrasound lesions are drawn benign-like (wider than tall, smooth margin,
posterior enhancement) or malignant-like (taller than wide, spiculated ill-defined margin,
posterior shadowing), recorded as the annotation's ``subtype``. By default they share one
category, 1 "lesion": at 128 px many lesions span 15-25 pixels of speckle, where the subtype cues
are faint, and a second class would spend the few CPU minutes of training on classification
rather than on the detection gap this dataset exists to measure. ``two_classes=True`` makes the
subtypes categories 1 "benign" and 2 "malignant" (the BUV convention).

What the data is built to show (DESIGN section 4):
- Lesions move smoothly with the tissue under a panning/zooming camera, change size slowly, and
  may enter or leave the view, so a clip is temporally coherent.
- Each frame carries one degradation label (``DEGRADATIONS``). Degradations come in bursts of
  1-2 frames with clean frames around them, so a single frame can be ambiguous while its clip is
  clear. ``noise``/``blur``/``low_contrast``/``overexposed``/``occlusion`` keep a faint trace of
  the lesion (hard but not hopeless); ``distractor`` adds an unannotated one-frame look-alike
  with a faint cue of its own (``_look_alike``); ``hopeless`` (a small share) removes every trace
  of the lesion, which stays annotated.

Conventions
- Pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``; its centre is ``col + 0.5``.
  Boxes are the lesion's true outline (the ``rho = 1`` contour, where the soft margin is half
  way) clipped to the frame, COCO ``[x, y, w, h]`` in pixels. A lesion with less than
  ``MIN_VISIBLE_FRACTION`` of its area inside the frame gets no box and is counted in the image's
  ``partial_lesions_dropped``; a kept box whose lesion is cut by the border has ``truncated``.
- ``lesion_visible`` is true when the frame has a box and is not ``hopeless``; ``occluded`` on an
  annotation marks the lesion a (partial) occluder covers, and every lesion of a hopeless frame.
- Every video draws from its own ``numpy.random.Generator`` seeded by ``(seed, video index)``, so
  the output does not depend on the number of worker processes.
"""

import logging

from v2idetr.data.synthetic.constants import (
    CATEGORIES,
    DEGRADATIONS,
    GENERATOR_VERSION,
    MIN_VISIBLE_FRACTION,
    PRESETS,
    TWO_CLASS_CATEGORIES,
)
from v2idetr.data.synthetic.preview import save_preview
from v2idetr.data.synthetic.writer import SynthResult, generate, split_stats

__all__ = [
    "CATEGORIES",
    "DEGRADATIONS",
    "GENERATOR_VERSION",
    "MIN_VISIBLE_FRACTION",
    "PRESETS",
    "TWO_CLASS_CATEGORIES",
    "SynthResult",
    "generate",
    "save_preview",
    "split_stats",
]

log = logging.getLogger(__name__)
