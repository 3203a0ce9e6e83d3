"""The generator's fixed tables: its version, presets, degradation types and their shares, categories.

A module with no dependencies, so every other part reads the same values. Changing any of them
changes what the generator writes, which bumps ``GENERATOR_VERSION``.
"""

from __future__ import annotations

GENERATOR_VERSION = "1.1"
PRESETS = ("ultrasound", "colonoscopy")
DEGRADATIONS = (
    "none",
    "noise",
    "blur",
    "low_contrast",
    "overexposed",
    "occlusion",
    "distractor",
    "hopeless",
)
CATEGORIES = {
    "ultrasound": [{"id": 1, "name": "lesion"}],
    "colonoscopy": [{"id": 1, "name": "polyp"}],
}
TWO_CLASS_CATEGORIES = [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]
MIN_VISIBLE_FRACTION = 0.3

# Share of each type among degraded frames. Hopeless is ~10% of them (~3% of all frames at the
# default rate 0.3); occlusion and hopeless need a lesion in view and fall back to a generic type.
_DEGRADATION_WEIGHTS = {
    "noise": 0.17,
    "blur": 0.17,
    "low_contrast": 0.15,
    "overexposed": 0.12,
    "occlusion": 0.14,
    "distractor": 0.15,
    "hopeless": 0.10,
}
_GENERIC = ("noise", "blur", "low_contrast", "overexposed", "distractor")
_NEEDS_LESION = ("occlusion", "hopeless")
