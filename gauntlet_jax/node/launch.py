"""Start-up shared by the `validate` and `mine` entry points: arguments, logging, the multi-host
job, chain, node, corpus, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from gauntlet_jax.chain import open_chain
from gauntlet_jax.cli import run_guarded, setup_logging
from gauntlet_jax.config import Config, add_config_args, config_from_args
from gauntlet_jax.data.corpus import TokenCorpus, open_corpus
from gauntlet_jax.node.multihost import leader_opened, maybe_initialize, shared_stop
from gauntlet_jax.node.stack import stack_string
from gauntlet_jax.node.startup import Node

log = logging.getLogger(__name__)


def parse_role_args(
    prog: str,
    doc: str | None,
    argv: Sequence[str] | None,
    extra: Sequence[tuple[str, dict[str, Any]]] = (),
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    for flag, options in extra:
        parser.add_argument(flag, **options)
    add_config_args(parser)
    parser.add_argument(
        "--hotkey",
        required=True,
        help="this node's name: fills {hotkey} in storage paths. The signing secret comes from "
        "the env var named by chain.key_env (or chain.key_file), never from the command line",
    )
    parser.add_argument("--windows", type=int, default=None, help="stop after N windows")
    parser.add_argument(
        "--until-window",
        type=int,
        default=None,
        metavar="W",
        help="stop once window W is done (a bounded run or a replay; a restart resumes before it)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser.parse_args(argv)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT / SIGTERM, so loops finish their window's state and exit."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("gauntlet_jax").warning("signal %d: stopping after this step", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def open_node(args: argparse.Namespace) -> tuple[Config, Node, TokenCorpus, threading.Event]:
    """Config, node, corpus and the stop flag; in a multi-host job only the leader connects to
    the chain (the others get its answers) and the stop flag is the leader's."""
    cfg = config_from_args(args)
    # First, before anything touches a device: joins the multi-host job on a TPU pod slice
    # (mesh.distributed), so jax.devices() spans every host.
    maybe_initialize(cfg.mesh)
    log.info(
        "gauntlet-jax node %s, config %s: %s",
        args.hotkey,
        cfg.name,
        stack_string(),
    )
    stop = shared_stop(stop_on_signals())
    chain = leader_opened(lambda: open_chain(cfg.chain), ("hotkey",))
    node = Node.connect(cfg, args.hotkey, chain, commit=False)  # the role commits when ready
    corpus = open_corpus(cfg.data, storage=cfg.storage)
    return cfg, node, corpus, stop


RoleBody = Callable[[argparse.Namespace, Config, Node, TokenCorpus, threading.Event], object]


def run_role(
    prog: str,
    doc: str | None,
    argv: Sequence[str] | None,
    body: RoleBody,
    extra: Sequence[tuple[str, dict[str, Any]]] = (),
) -> int:
    """An entry point: parses, opens the node and runs `body`; a GauntletError is printed as one
    line and exits with the code of its kind (`gauntlet_jax.cli`: 78 fix the config, 75 try
    again)."""
    args = parse_role_args(prog, doc, argv, extra)

    def main() -> None:
        setup_logging(args.log_level)
        cfg, node, corpus, stop = open_node(args)
        body(args, cfg, node, corpus, stop)

    return run_guarded(main)
