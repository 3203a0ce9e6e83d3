"""Several models' detections of the same frames fused into one set: pseudo-labels from a teacher
ensemble (`v2idetr pseudo-label --checkpoint A B C`).

On videos it was not trained on, one teacher misses lesions and draws loose boxes; teachers trained
on the same labels from different seeds do not all err on the same frames, so their agreement is a
better label: three ultrasound teachers' fused pseudo-labels of an archive of 200 new videos found
more of its lesions than any one of them did, as precise and tight as the best one's, which nothing
without the archive's labels could have told apart from the others (docs/RESULTS.md, "better labels
for the archive"). Per frame, highest score first, a detection joins the lesion of its class whose
fused box it overlaps most (IoU >= ``FUSION_IOU``) and that holds no box of its model yet, else it
starts a lesion. A lesion's box is the score-weighted mean of its boxes and its score their sum
over the number of models: a lesion one model of three found keeps a third of its score, so
``pseudo_label``'s thresholds ask for agreement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from v2idetr.data.lesion_match import same_class_iou
from v2idetr.data.pseudo_labels import Predictions  # image_id -> boxes (x1y1x2y2 px), scores, labels
from v2idetr.errors import ConfigError

FUSION_IOU = 0.55  # two models' boxes of one class overlapping this much show the same lesion


def _fused_frame(detections: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One frame's detections from each model (``detections[k]``: model k's) fused (module docstring)."""
    boxes = np.concatenate([np.asarray(d["boxes"], np.float32).reshape(-1, 4) for d in detections])
    scores = np.concatenate([np.asarray(d["scores"], np.float32).reshape(-1) for d in detections])
    labels = np.concatenate([np.asarray(d["labels"], np.int64).reshape(-1) for d in detections])
    model = np.concatenate([np.full(len(np.asarray(d["scores"]).reshape(-1)), k) for k, d in enumerate(detections)])
    members: list[list[int]] = []
    fused = np.zeros((0, 4), np.float32)
    for i in np.argsort(-scores, kind="stable"):
        iou = same_class_iou(boxes[i:i + 1], labels[i:i + 1], fused, labels[[m[0] for m in members]])[0]
        iou[[model[i] in model[m] for m in members]] = 0.0  # at most one box of each model per lesion
        if len(members) and iou.max() >= FUSION_IOU:
            j = int(iou.argmax())
            members[j].append(int(i))
            w = scores[members[j]]
            fused[j] = (boxes[members[j]] * w[:, None]).sum(0) / max(float(w.sum()), 1e-12)
        else:
            members.append([int(i)])
            fused = np.concatenate([fused, boxes[i:i + 1]])
    return {"boxes": fused, "scores": np.array([scores[m].sum() / len(detections) for m in members], np.float32),
            "labels": np.array([labels[m[0]] for m in members], np.int64)}


def fuse_detections(per_model: Sequence[Predictions]) -> Predictions:
    """The detections of several models (each as ``read_coco_results`` or ``api.predict`` give them,
    keyed by the same frames' image ids) fused into one model's (module docstring); one model's are
    returned as they are."""
    if not per_model:
        raise ConfigError("fuse_detections: no model's detections given")
    if len(per_model) == 1:
        return dict(per_model[0])
    none = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "labels": np.zeros(0, np.int64)}
    frames = sorted(set().union(*per_model))
    return {i: _fused_frame([p.get(i, none) for p in per_model]) for i in frames}
