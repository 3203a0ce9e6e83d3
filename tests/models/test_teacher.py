import pytest
import torch

from v2idetr.config import ModelConfig
from v2idetr.errors import ConfigError
from v2idetr.models.backbone import FeatureMaps
from v2idetr.models.detector import build_detector
from v2idetr.models.msi import MSITemporal
from v2idetr.models.teacher import TeacherView, VideoTeacher, repeated_frames, static_clips


def tiny(**kw) -> ModelConfig:
    base = dict(
        backbone="resnet18", backbone_stages=3, num_feature_levels=3, hidden_dim=32, nheads=4, enc_layers=1,
        dec_layers=2, ffn_dim=64, num_queries=8, dn_number=0, temporal="msi", msi_layers=1, msi_points=2,
    )
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("frames", [1, 3, 5])
def test_teacher_output_shapes(frames: int) -> None:
    torch.manual_seed(0)
    teacher = VideoTeacher(tiny(), num_classes=2, num_frames=frames).eval()
    images = torch.randn(2, frames, 3, 64, 96)
    masks = torch.zeros(2, 64, 96, dtype=torch.bool)
    masks[1, :, 80:] = True
    out = teacher(images, masks)
    assert out["pred_logits"].shape == (2, 8, 2)
    assert out["pred_boxes"].shape == (2, 8, 4)
    assert len(out["aux_outputs"]) == 1
    assert torch.isfinite(out["pred_logits"]).all()


def test_support_frames_change_the_msi_teacher_output() -> None:
    torch.manual_seed(0)
    teacher = VideoTeacher(tiny(), num_classes=1, num_frames=3).eval()
    images = torch.randn(1, 3, 3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    a = teacher(images, masks)["pred_logits"]
    images2 = images.clone()
    images2[:, 2] = torch.randn(3, 64, 64)
    b = teacher(images2, masks)["pred_logits"]
    assert not torch.allclose(a, b)


def test_mean_teacher_on_identical_frames_equals_the_image_detector() -> None:
    torch.manual_seed(0)
    teacher = VideoTeacher(tiny(temporal="mean"), num_classes=1, num_frames=3).eval()
    frame = torch.randn(1, 1, 3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    clip = frame.repeat(1, 3, 1, 1, 1)
    expected = teacher.detector(frame[:, 0], masks)["pred_boxes"]
    assert torch.allclose(teacher(clip, masks)["pred_boxes"], expected, atol=1e-5)


def test_teacher_holds_the_detector_plus_a_temporal_module_only() -> None:
    teacher = VideoTeacher(tiny(), num_classes=1, num_frames=3)
    student = build_detector(tiny(temporal="none"), 1)
    prefixes = {k.split(".")[0] for k in teacher.state_dict()}
    assert prefixes == {"detector", "temporal"}
    shared = {k[len("detector."):]: v for k, v in teacher.state_dict().items() if k.startswith("detector.")}
    result = student.load_state_dict(shared, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_teacher_rejects_a_clip_of_the_wrong_length() -> None:
    teacher = VideoTeacher(tiny(), num_classes=1, num_frames=3)
    with pytest.raises(ValueError, match="3"):
        teacher(torch.randn(1, 2, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool))


def test_msi_with_one_frame_one_level_and_zero_offsets_is_pointwise() -> None:
    """The documented identity-like case: no spatial or temporal mixing at all."""
    torch.manual_seed(0)
    msi = MSITemporal(d_model=16, n_levels=1, num_frames=1, num_layers=2, n_heads=4, n_points=3, ffn_dim=32,
                      dropout=0.0).eval()
    for layer in msi.layers:
        torch.nn.init.zeros_(layer.attn.sampling_offsets.weight)
        torch.nn.init.zeros_(layer.attn.sampling_offsets.bias)
    src = torch.randn(1, 16, 6, 7)
    feats = FeatureMaps(srcs=[src], masks=[torch.zeros(1, 6, 7, dtype=torch.bool)], pos=[torch.zeros(1, 16, 6, 7)])
    out = msi([feats]).srcs[0]
    src2 = src.clone()
    src2[:, :, 0, 0] += 5.0  # change one token
    out2 = msi([FeatureMaps(srcs=[src2], masks=feats.masks, pos=feats.pos)]).srcs[0]
    changed = (out2 - out).abs().sum(1)[0] > 1e-5
    assert changed[0, 0] and changed.sum() == 1  # only that token's output moved
    # and it is exactly the residual point-wise map of each layer
    x = src.flatten(2).transpose(1, 2)
    for layer in msi.layers:
        attn = layer.attn.output_proj(layer.attn.value_proj(x + msi.frame_embed.weight[0]))
        x = layer.ffn(layer.norm(x + attn))
    assert torch.allclose(out, x.transpose(1, 2).reshape_as(out), atol=1e-5)


def test_gated_msi_starts_as_the_image_detector_and_its_gate_learns() -> None:
    torch.manual_seed(0)
    teacher = VideoTeacher(tiny(msi_gate=True), num_classes=1, num_frames=3).eval()
    images = torch.randn(2, 3, 3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    out = teacher(images, masks)
    alone = teacher.detector(images[:, 0], masks)
    assert torch.equal(out["pred_logits"], alone["pred_logits"])
    assert torch.equal(out["pred_boxes"], alone["pred_boxes"])
    out["pred_logits"].sum().backward()
    gate = teacher.temporal.gates[0]
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0
    # once the gate opens, the support frames matter
    with torch.no_grad():
        gate.weight.copy_(torch.eye(32))
    images[:, 2] = torch.randn(2, 3, 64, 64)
    assert not torch.allclose(teacher(images, masks)["pred_logits"], alone["pred_logits"])


def test_repeated_frames_are_found_exactly_and_padding_counts() -> None:
    torch.manual_seed(0)
    a, b, c = torch.rand(3, 3, 16, 16)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[5, :, 12:] = True  # the same pixels with other padding: another input
    first, inverse = repeated_frames(torch.stack([a, b, a, c, b, b]), masks)
    assert first.tolist() == [0, 1, 3, 5] and inverse.tolist() == [0, 1, 0, 2, 1, 3]
    near = a.clone()
    near[0, 0, 0] += 1e-6  # fingerprints within tolerance, pixels not equal
    assert repeated_frames(torch.stack([a, near]), masks[:2]) is None
    assert repeated_frames(torch.stack([a, b, c]), masks[:3]) is None


def _overlapping_clips(frames: int = 6, t: int = 3) -> torch.Tensor:
    """Clips of consecutive key frames of one video, as eval builds them (key, then key-1, key+1)."""
    video = torch.rand(frames, 3, 64, 64)
    keys = range(1, frames - 1)
    return torch.stack([video[[k, k - 1, k + 1][:t]] for k in keys])


def test_teacher_runs_each_distinct_frame_once_in_eval_with_the_same_outputs() -> None:
    torch.manual_seed(0)
    teacher = VideoTeacher(tiny(), num_classes=2, num_frames=3).eval()
    seen: list[int] = []
    teacher.detector.backbone.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[0]))
    clips = _overlapping_clips()  # 4 clips, 12 frames, 6 distinct
    masks = torch.zeros(4, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        reused = teacher(clips, masks)
        teacher.reuse_repeated_frames = False
        every = teacher(clips, masks)
    assert seen == [6, 12]
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(reused[key], every[key], rtol=1e-4, atol=1e-5)
    teacher.reuse_repeated_frames = True
    seen.clear()
    with torch.no_grad():
        teacher(clips[:, :1].repeat(1, 3, 1, 1, 1), masks)  # a static teacher's clips: one frame each
    assert seen == [4]
    teacher.train()  # training: batch statistics would change, every frame goes through
    teacher(clips, masks)
    assert seen == [4, 12]


def test_teacher_views_show_it_less_than_its_clip() -> None:
    torch.manual_seed(0)
    teacher = VideoTeacher(tiny(), num_classes=1, num_frames=3).eval()
    clip = torch.randn(2, 3, 3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        on_clip = teacher(clip, masks)["pred_logits"]
        static = TeacherView(teacher, "static")(clip, masks)["pred_logits"]
        key_frame = TeacherView(teacher, "key-frame")(clip, masks)["pred_logits"]
        assert torch.equal(static, teacher(clip[:, :1].repeat(1, 3, 1, 1, 1), masks)["pred_logits"])
        assert torch.equal(key_frame, teacher.detector(clip[:, 0], masks)["pred_logits"])
    assert not torch.allclose(static, on_clip) and not torch.allclose(key_frame, static)
    assert torch.equal(static_clips(clip)[:, 2], clip[:, 0])
    with pytest.raises(ConfigError, match="'clip'"):
        TeacherView(teacher, "clip")
