from pathlib import Path

import pytest
import torch

from v2idetr.engine.run_log import LossWindow, NonFiniteSteps
from v2idetr.errors import TrainingError


def test_loss_window_means_each_term_since_the_last_take_without_per_layer_terms():
    window = LossWindow()
    window.add({"loss": torch.tensor(2.0), "loss_bbox": torch.tensor(1.0), "loss_bbox_0": torch.tensor(9.0)})
    window.add({"loss": torch.tensor(4.0), "loss_bbox": torch.tensor(3.0), "loss_bbox_0": torch.tensor(9.0)})
    assert window.take() == pytest.approx({"loss": 3.0, "loss_bbox": 2.0})
    window.add({"loss": torch.tensor(5.0)})
    assert window.take() == {"loss": 5.0}  # a new window: the earlier steps are gone
    assert window.take() == {}


def test_non_finite_steps_stop_only_at_the_limit_in_a_row() -> None:
    bad = NonFiniteSteps(limit=2, last_checkpoint=Path("run/last.ckpt"))
    bad.skip("loss", step=4)
    bad.ok()  # a good step between
    bad.skip("gradient", step=9)
    assert (bad.in_a_row, bad.total) == (1, 2)
    with pytest.raises(TrainingError, match=r"2 non-finite gradient values in a row at step 10; last good checkpoint: "
                       r"run/last.ckpt"):
        bad.skip("gradient", step=10)
