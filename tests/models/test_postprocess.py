"""Post-processing: top-k over queries x classes, pixel boxes of the original frame, ONNX export."""

from __future__ import annotations

import io

import pytest
import torch

from v2idetr.models.postprocess import PostProcess


def _logit(p: float) -> float:
    return float(torch.logit(torch.tensor(p)))


def _outputs() -> dict[str, torch.Tensor]:
    """B=2, Q=3, C=2 with known probabilities and boxes."""
    probs = torch.tensor(
        [
            [[0.9, 0.1], [0.2, 0.8], [0.05, 0.3]],
            [[0.4, 0.6], [0.7, 0.01], [0.95, 0.5]],
        ]
    )
    boxes = torch.tensor(
        [
            [[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1]],
            [[0.5, 0.5, 1.0, 1.0], [0.2, 0.4, 0.2, 0.2], [0.9, 0.95, 0.4, 0.3]],
        ]
    )
    return {"pred_logits": torch.logit(probs), "pred_boxes": boxes}


def test_known_topk_scores_labels_and_pixel_boxes():
    sizes = torch.tensor([[100, 200], [300, 50]])  # (h, w): non-square, one wide, one tall
    dets = PostProcess(num_select=3)(_outputs(), sizes)
    assert len(dets) == 2
    first, second = dets
    torch.testing.assert_close(first["scores"], torch.tensor([0.9, 0.8, 0.3]))
    assert first["labels"].tolist() == [0, 1, 1] and first["labels"].dtype == torch.int64
    # query 0: cxcywh (0.5,0.5,0.2,0.4) -> xyxy (0.4,0.3,0.6,0.7) * (200,100,200,100)
    # query 1: (0.25,0.75,0.5,0.5) -> (0,0.5,0.5,1.0); query 2: (0.1,0.1,0.1,0.1) -> (0.05,0.05,0.15,0.15)
    torch.testing.assert_close(
        first["boxes"],
        torch.tensor([[80.0, 30.0, 120.0, 70.0], [0.0, 50.0, 100.0, 100.0], [10.0, 5.0, 30.0, 15.0]]),
    )
    torch.testing.assert_close(second["scores"], torch.tensor([0.95, 0.7, 0.6]))
    assert second["labels"].tolist() == [0, 0, 1]
    # query 2 of image 1 spills past the right/bottom edge: (0.7,0.8,1.1,1.1) -> clamped to (50, 300)
    torch.testing.assert_close(
        second["boxes"],
        torch.tensor([[35.0, 240.0, 50.0, 300.0], [5.0, 90.0, 15.0, 150.0], [0.0, 0.0, 50.0, 300.0]]),
    )


def test_k_is_num_select_capped_by_queries_times_classes():
    out = _outputs()
    sizes = torch.tensor([[10, 10], [10, 10]])
    assert [len(d["scores"]) for d in PostProcess(num_select=4)(out, sizes)] == [4, 4]
    full = PostProcess(num_select=100)(out, sizes)
    assert all(d["scores"].shape == (6,) and d["boxes"].shape == (6, 4) for d in full)
    assert all(bool((d["scores"][:-1] >= d["scores"][1:]).all()) for d in full)
    # Every (query, class) pair appears exactly once when K = Q * C.
    probs = out["pred_logits"].sigmoid()
    for i, d in enumerate(full):
        torch.testing.assert_close(d["scores"].sort().values, probs[i].flatten().sort().values)


def test_boxes_clamped_into_the_frame():
    out = {
        "pred_logits": torch.zeros(1, 2, 1),
        "pred_boxes": torch.tensor([[[0.0, 0.0, 0.5, 0.5], [1.0, 1.0, 0.5, 0.5]]]),
    }
    det = PostProcess(num_select=2)(out, torch.tensor([[40, 80]]))[0]
    assert float(det["boxes"].min()) >= 0.0
    assert float(det["boxes"][:, [0, 2]].max()) <= 80.0 and float(det["boxes"][:, [1, 3]].max()) <= 40.0


def test_bad_target_sizes_are_rejected():
    with pytest.raises(ValueError, match=r"target_sizes must be \[B, 2\]"):
        PostProcess()(_outputs(), torch.tensor([100, 200]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_export_matches_eager():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.post = PostProcess(num_select=4)

        def forward(self, logits, boxes, sizes):
            return self.post.forward_batched(logits, boxes, sizes)

    out = _outputs()
    sizes = torch.tensor([[100, 200], [300, 50]])
    buffer = io.BytesIO()
    torch.onnx.export(
        Wrapper(),
        (out["pred_logits"], out["pred_boxes"], sizes),
        buffer,
        input_names=["logits", "boxes", "sizes"],
        output_names=["scores", "labels", "pixel_boxes"],
        dynamic_axes={"logits": {0: "batch"}, "boxes": {0: "batch"}, "sizes": {0: "batch"}},
        dynamo=False,
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    # A different batch size than the one traced, to show the batch axis stays dynamic.
    gen = torch.Generator().manual_seed(0)
    logits, boxes = torch.randn(3, 3, 2, generator=gen), torch.rand(3, 3, 4, generator=gen)
    sizes3 = torch.tensor([[120, 90], [64, 64], [30, 400]])
    got = session.run(None, {"logits": logits.numpy(), "boxes": boxes.numpy(), "sizes": sizes3.numpy()})
    want = PostProcess(num_select=4).forward_batched(logits, boxes, sizes3)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(torch.from_numpy(g), w, rtol=1e-5, atol=1e-4)
