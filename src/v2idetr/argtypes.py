"""argparse types for numeric flags: a value that means nothing is refused with the flag named
(argparse prefixes the message with ``argument --flag:``), instead of failing later or silently
meaning a default."""

from __future__ import annotations

import argparse
import math

from v2idetr.errors import ConfigError
from v2idetr.outputs import output_file, output_folder


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, batch sizes)."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds; counts where 0 means none)."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: two single-thread jobs side by side use a 2-core machine better than one job
    on both cores, and without it two jobs fight over every core."""
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="CPU threads (0: the library's default, every core)")  # applied by `api.set_threads`


def positive_float(text: str) -> float:
    """A number > 0 (frame rates)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A number in 0..1 (score thresholds, IoUs)."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {text!r}")
    return value


def _checked(check, text: str) -> str:
    try:
        check(text, flag="")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None
    return text


def out_folder(text: str) -> str:
    """An ``--out`` that is (or will be) a folder: not a file, nor under one (`outputs.output_folder`)."""
    return _checked(output_folder, text)


def out_file(text: str) -> str:
    """An ``--out`` that is (or will be) a file: not a folder, nor under a file (`outputs.output_file`)."""
    return _checked(output_file, text)
