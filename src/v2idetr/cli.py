"""The `v2idetr` command line: one entry point, one subcommand per task.

Each command module exposes ``register(subparsers)``, which adds its subcommand(s) with a
``func(args) -> int`` default. Errors caused by user input (``V2IDetrError``) are printed as one
clear message and exit with status 2; anything else is a bug and keeps its traceback. SIGTERM (a
scheduler, ``kill``, a container stopping) is handled as Ctrl-C is: every command's clean-up runs
(partial outputs removed, a training checkpoint saved) and the exit status is the signal's.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from v2idetr import __version__
from v2idetr.errors import Terminated, V2IDetrError

COMMAND_MODULES = (
    "v2idetr.data.commands",  # data convert | stats | validate | sparsify | add-frames
    "v2idetr.data.synthetic_command",  # synth
    "v2idetr.training_commands",  # train | distill | eval
    "v2idetr.pseudo_label_command",  # pseudo-label
    "v2idetr.deploy.commands",  # predict | export
    "v2idetr.bench.commands",  # bench speed | accuracy
    "v2idetr.demo",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="v2idetr",
        description="V2I-DETR: video-to-image distillation for real-time lesion detection in medical video.",
    )
    parser.add_argument("--version", action="version", version=f"v2idetr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides (key=value) may stand anywhere among the options, as users type them.
    args, rest = parser.parse_known_args(argv)
    if rest:
        if hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
            args.overrides = [*args.overrides, *rest]
        else:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    previous = _handle_sigterm()
    try:
        return int(args.func(args) or 0)
    except V2IDetrError as exc:
        print(f"v2idetr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"v2idetr {args.command}: {'terminated' if terminated else 'interrupted'}; partial outputs were removed",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _handle_sigterm() -> signal.Handlers | None:
    """Make SIGTERM raise `Terminated` (main thread only); the handler it replaces, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)  # type: ignore[return-value]


if __name__ == "__main__":
    raise SystemExit(main())
