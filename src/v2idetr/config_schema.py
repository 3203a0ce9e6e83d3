"""The configuration's schema: every key, its type and its default (the single source of defaults).

`v2idetr.config` loads a run's configuration into these dataclasses (YAML files from ``configs/``,
then dotted ``key=value`` overrides) and checks the values; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """Where the data is and how clips and batches are made."""

    train: str | None = None  # annotation file (COCO-VID JSON) or dataset folder
    val: str | None = None
    test: str | None = None
    format: str = "auto"  # auto | coco-vid | buv | sun | sun-seg | images | video | videos
    images_root: str | None = None  # frame paths are relative to the JSON's folder unless set
    num_frames: int = 1  # T: frames per clip (1 for image models)
    clip_mode: str = "adjacent"  # adjacent | random | global | past
    # random mode (and distillation's random cross-view sampling): support frames within +-window
    # of the key frame. 4, not more: a teacher trained on adjacent 3-frame clips scored degraded-frame
    # AP50 0.81 with support frames drawn within +-4 frames but 0.71 within +-8 (docs/METHOD.md).
    window: int = 4
    stride: int = 1  # adjacent/past mode: gap between neighbouring clip frames
    train_sizes: list[int] = field(default_factory=lambda: [128])  # short sides to draw from in training
    # clip: one short side drawn per clip, and a batch pads to its largest (and to the widest of its
    # crops); batch: one drawn per batch and crops that keep the frame's aspect ratio, so every clip of
    # a batch has one size and nothing pads (a step costs the size it drew, as in Ultralytics)
    multiscale: str = "clip"
    test_size: int = 128
    max_size: int = 224  # cap on the long side (0: no cap)
    hflip: float = 0.5
    crop: float = 0.0  # probability of a random crop that keeps every box
    photometric: float = 0.5  # probability of per-clip brightness/contrast jitter
    batch_size: int = 8
    workers: int = 0
    skip_invalid: bool = False
    exclude: str | None = None  # text file of video names to leave out (e.g. BUV errata)
    # videos nobody labelled, for distillation only (an archive): COCO-VID files whose frames are all
    # unlabelled, folders of per-video frame folders and/or video files, or video files. On the command
    # line `data.unlabelled=PATH` may be repeated (data/archive.py)
    unlabelled: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    """The deformable DETR detector (student / baseline) and, for teachers, the temporal module."""

    num_classes: int = 0  # 0: taken from the training data
    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50 | efficientnet_lite0
    backbone_weights: str = "none"  # none | imagenet (Lite: the installed package's file) | <state dict path>
    backbone_stages: int = 4  # ResNet stages to run (3: stop after C4)
    freeze_backbone_bn: bool = True
    # a pretrained trunk's stem and first stages (ResNet: layer1; Lite0: its stride-2/4 blocks) keep
    # their weights, as in Detectron2 and Deformable DETR; false trains them too, for frames far from
    # ImageNet's photographs
    freeze_backbone_stem: bool = True
    # the whole trunk keeps the weights it starts from (train.init_from or backbone_weights), batch norm
    # included, and no gradient flows through it: a teacher started from its image baseline then trains
    # only the projections, the transformer and the temporal module, at 1.6-2x the clips per second on a CPU
    freeze_backbone: bool = False
    num_feature_levels: int = 4  # C3-C5 (+ extra stride-64 levels)
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 1024
    dropout: float = 0.0
    enc_points: int = 4
    dec_points: int = 4
    num_queries: int = 300
    two_stage: bool = True
    box_refine: bool = True
    dn_number: int = 100  # denoising queries (0 disables denoising training)
    dn_label_noise: float = 0.5
    dn_box_noise: float = 0.4
    temporal: str = "none"  # none | mean | msi  (teachers only)
    msi_layers: int = 2
    msi_points: int = 4
    # each MSI layer's change to the features through a zero-initialised projection: the teacher starts
    # as its image detector, what a teacher started from an image checkpoint (train.init_from) wants
    msi_gate: bool = False


@dataclass
class LossConfig:
    """Matching costs and loss weights (DETR family defaults)."""

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_class: float = 2.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    aux: bool = True


@dataclass
class DistillConfig:
    """Video-to-image distillation (TFD + CQD); weights of 0 switch a term off."""

    tfd: float = 1.0
    # CQD's loss is small beside the detection loss; 5 beat 1 on 9 of 10 paired seeds (docs/RESULTS.md).
    cqd: float = 5.0
    tfd_mask: str = "gaussian"  # gaussian | binary | full (every pixel: not target-guided)
    tfd_features: str = "memory"  # memory | backbone
    # teacher: its features; residual: the starting student's plus what the teacher's support frames add
    # (its clip's features minus its key frame's repeated; distill/tfd.py)
    tfd_target: str = "teacher"
    cqd_sampling: str = "random"  # random | fixed
    cqd_proposals: float = 2.0  # weight of CQD's dense two-stage proposal-score term (0: off; docs/METHOD.md)
    # CQD's class term: averaged over the queries, or per teacher detection (summed, divided by the teacher's
    # foreground mass; distill/cqd.py)
    cqd_class_norm: str = "queries"
    # weight of CQD's student-query term: the teacher's verdict on the student's own queries (0: off; docs/METHOD.md)
    cqd_student_queries: float = 0.0
    # share of training samples drawn in proportion to the teacher-student disagreement on the frame
    # (0: uniform; distill/hard_frames.py)
    hard_frames: float = 0.0
    # teacher: the frames the teacher detects a lesion in and the rest each keep their uniform share
    # of the samples, the choice acts within each; teacher-negatives: within the rest only;
    # none: one excess over all frames
    hard_frames_strata: str = "teacher"
    # probability that the student's key frame is degraded (blur, noise, contrast, exposure) while the
    # teacher sees the clean clip (0: off; distill/student_view.py)
    student_degrade: float = 0.0
    init_from_teacher: bool = True
    # share of each batch's key frames that are unlabelled frames (0: labelled frames only, the paper's, or
    # ARCHIVE_SHARE when data.unlabelled names an archive), on top of data.batch_size labelled ones; there
    # the student gets no detection loss, TFD masks from the teacher's detections, and CQD
    unlabelled: float = 0.0
    # the teacher's detections at or above this score make TFD's masks on unlabelled frames (and pseudo_boxes' targets)
    pseudo_score: float = 0.5
    # weight of the set loss of the student's own predictions on unlabelled frames towards the teacher's detections
    # (score >= pseudo_score), their scores as soft class targets (0: off; distill/objective.py)
    pseudo_boxes: float = 0.0
    # what the teacher sees: its clip, or its key frame T times (static: the control without temporal context)
    teacher_view: str = "clip"


@dataclass
class TrainConfig:
    """Optimisation schedule and bookkeeping."""

    steps: int = 2000
    lr: float = 2e-4
    backbone_lr: float = 2e-5
    temporal_lr: float = 0.0  # a teacher's temporal module (MSI); 0: train.lr
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | step | constant
    step_milestones: list[float] = field(default_factory=lambda: [0.8])  # fractions of steps
    clip_grad: float = 0.1
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    # recompute encoder, MSI and decoder layer activations in the backward pass instead of keeping
    # them: less memory for the same gradients, about a third more compute per step
    activation_checkpointing: bool = False
    ema: float = 0.0  # EMA decay, 0 disables
    eval_every: int = 500
    log_every: int = 20
    keep_last: int = 2
    # steps whose checkpoint is also written (without validation) and never pruned: a later run starts there
    save_steps: list[int] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads on CPU, 0: library default
    time_limit_min: float = 0.0  # stop (save, no validation; resume later) after this many minutes, 0: no limit
    # start from a checkpoint's weights (an image detector's or a teacher's; a new temporal module starts
    # fresh); not the optimiser or step: that is --resume. Ignored when resuming.
    init_from: str = ""
    max_bad_steps: int = 20  # non-finite losses in a row before the run stops
    best_metric: str = "AP50"  # validation metric that selects best.ckpt (higher is better)


@dataclass
class EvalConfig:
    """Evaluation protocol for image-level precision / recall / F1 (DESIGN section 5)."""

    protocol: str = "yona"  # yona | strict | stft
    score_thresh: float | None = None  # None: the protocol's default
    nms_iou: float | None = None  # None: the protocol default (yona/strict 0.3, stft none); 1.0 disables NMS
    num_select: int = 100


@dataclass
class Config:
    """A complete run configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
