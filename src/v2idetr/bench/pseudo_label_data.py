"""The training files of `v2idetr bench accuracy`'s pseudo-label rows: the budget's unlabelled frames
with the row's teacher's detections as labels (`v2idetr pseudo-label`), and for the archive rows the
archive's videos pseudo-labelled the same way and merged in (`v2idetr data merge`). Written beside
the run folder (``seed-N-pseudo-labels.json`` ...), so a reviewer can look at what the student learnt from."""

from __future__ import annotations

from pathlib import Path

from v2idetr import api
from v2idetr.data.commands import write_coco_vid
from v2idetr.data.load import load_index
from v2idetr.data.merge import merge_indexes


def _pseudo_labelled(teacher: Path, data: Path, out: Path, resume: bool, progress: bool,
                     rules: dict[str, int]) -> Path:
    if not (resume and out.is_file()):
        out.parent.mkdir(parents=True, exist_ok=True)
        api.pseudo_label(teacher, data, out, progress=progress, **rules)
    return out


def pseudo_label_training_file(run: Path, teacher: Path, train: Path, archive: Path | None, resume: bool = False,
                               progress: bool = True, temporal: int = 0, interpolate: int = 0) -> Path:
    """The file a pseudo-label row trains on (module docstring); ``archive``: the archive row's videos
    nobody labelled, else None. A fully labelled ``train`` is taken as it is (no frame to label);
    ``temporal``, ``interpolate``: `pseudo-label --temporal`, `--interpolate`."""
    labels, rules = train, {"temporal": temporal, "interpolate": interpolate}
    if load_index(train).num_unlabelled_frames:
        labels = _pseudo_labelled(teacher, train, run.with_name(f"{run.name}-pseudo-labels.json"), resume, progress,
                                  rules)
    if archive is None:
        return labels
    boxed = _pseudo_labelled(teacher, archive, run.with_name(f"{run.name}-archive-pseudo-labels.json"), resume,
                             progress, rules)
    merged = run.with_name(f"{run.name}-train-and-archive.json")
    write_coco_vid(merge_indexes([load_index(labels), load_index(boxed)]), str(labels), str(merged))
    return merged
