"""What every entry point shares: logging, and the one mapping from typed errors to
exit codes that a supervisor acts on.

Exit codes (sysexits.h), so systemd's `RestartPreventExitStatus=78` stops a broken node from
restarting forever while a transient fault is retried with back-off:
  0   done (a bounded run finished, or a stop was asked for)
  78  EX_CONFIG: the operator must fix something (config, key, registration, a missing extra,
      corrupt state): restarting cannot help
  75  EX_TEMPFAIL: the chain, a bucket or the network failed; the same command may work later
Which kinds are which: `errors.PERMANENT_ERRORS` (the validator's window loop survives the rest).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TextIO

from gauntlet_jax.errors import ConfigError, GauntletError, is_permanent

EX_OK = 0
EX_TEMPFAIL = 75
EX_CONFIG = 78

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def exit_code(error: GauntletError) -> int:
    """EX_CONFIG for a fault the operator must fix, EX_TEMPFAIL for one worth retrying."""
    return EX_CONFIG if is_permanent(error) else EX_TEMPFAIL


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Root logging at `level`: rich on a terminal, one plain timestamped line per record in a
    file or journal (never wrapped). `force=True` replaces what an import installed earlier
    (absl, as Orbax imports it, calls logging.basicConfig on its first message), which would
    otherwise make this a no-op and leave every process at WARNING."""
    stream = sys.stderr if stream is None else stream
    handler: logging.Handler
    if stream.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(file=stream), show_path=False)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    try:
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    except ValueError:
        raise ConfigError(
            f"--log-level {level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
        ) from None
    if logging.getLogger().level > logging.DEBUG:
        # Orbax logs each checkpoint manager's whole option set at INFO through absl.
        logging.getLogger("absl").setLevel(logging.WARNING)


def run_guarded(body: Callable[[], int | None]) -> int:
    """Runs an entry point's body; a GauntletError becomes one line on stderr (no traceback)
    and the exit code of its kind."""
    try:
        return body() or EX_OK
    except GauntletError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code(e)
