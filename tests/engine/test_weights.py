"""Where a run's weights come from: a frozen trunk must start from weights worth keeping."""

from __future__ import annotations

import logging

import pytest

from v2idetr.config import Config
from v2idetr.engine.weights import check_frozen_trunk
from v2idetr.errors import ConfigError


def _cfg(weights: str, frozen: bool = True) -> Config:
    cfg = Config()
    cfg.model.backbone_weights, cfg.model.freeze_backbone = weights, frozen
    return cfg


def test_a_frozen_trunk_is_refused_with_random_weights_and_warned_of_with_pretrained_ones(caplog) -> None:
    with pytest.raises(ConfigError, match="'model.freeze_backbone' = true"):
        check_frozen_trunk(_cfg("none"), starts_from_checkpoint=False)
    with caplog.at_level(logging.WARNING, logger="v2idetr.engine.weights"):
        check_frozen_trunk(_cfg("imagenet"), starts_from_checkpoint=False)
    assert "never adapts" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="v2idetr.engine.weights"):
        for weights in ("none", "imagenet"):  # started from a trained model, or not frozen: nothing to say
            check_frozen_trunk(_cfg(weights), starts_from_checkpoint=True)
            check_frozen_trunk(_cfg(weights, frozen=False), starts_from_checkpoint=False)
    assert caplog.text == ""
