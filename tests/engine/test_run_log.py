import pytest
import torch

from v2idetr.engine.run_log import LossWindow


def test_loss_window_means_each_term_since_the_last_take_without_per_layer_terms():
    window = LossWindow()
    window.add({"loss": torch.tensor(2.0), "loss_bbox": torch.tensor(1.0), "loss_bbox_0": torch.tensor(9.0)})
    window.add({"loss": torch.tensor(4.0), "loss_bbox": torch.tensor(3.0), "loss_bbox_0": torch.tensor(9.0)})
    assert window.take() == pytest.approx({"loss": 3.0, "loss_bbox": 2.0})
    window.add({"loss": torch.tensor(5.0)})
    assert window.take() == {"loss": 5.0}  # a new window: the earlier steps are gone
    assert window.take() == {}
