"""Activity is judged by server time, not by object names (issue 17, fault 4): a peer that
uploads objects named for windows 10…199 in one go is active at most in the window whose put
window that moment falls in (or in earlier windows, late), never at window 50."""

from __future__ import annotations

from pathlib import Path

from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.localchain import create_network
from gauntlet_jax.node.network import Network
from gauntlet_jax.protocol import names
from gauntlet_jax.storage.local import LocalBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_objects_named_for_future_windows_do_not_make_a_peer_active(
    tiny_config: Config, tmp_path: Path
) -> None:
    cfg = with_overrides(tiny_config, [f"chain.url=sqlite:///{tmp_path}/chain.db"])
    create_network(cfg, 3, force=True, manual_clock=True)
    chain = LocalChain(tmp_path / "chain.db")
    net = Network(cfg, chain, f"file://{tmp_path}/own")
    version, put_s = cfg.protocol.version, cfg.protocol.put_window_s
    clock = Clock()
    hoarder = LocalBucket(tmp_path / "hoarder", clock=clock)
    honest = LocalBucket(tmp_path / "honest", clock=clock)
    net.bucket_urls = {1: hoarder.url, 2: honest.url}
    # All at once, inside window 12's put window.
    clock.now = net.window_end_time(12) + put_s / 2
    for w in range(10, 200):
        hoarder.put(names.gradient_name(w, 1, version), b"x")
    # The honest peer uploads each window's object in that window's put window.
    for w in range(10, 51):
        clock.now = net.window_end_time(w) + put_s / 2
        honest.put(names.gradient_name(w, 2, version), b"x")
    span = cfg.validator.active_windows
    assert net.last_upload_windows([1, 2], 50, span) == {2: 50}
    assert net.last_upload_windows([1, 2], 14, span) == {1: 12, 2: 14}
    # Written late (in window 12's put window), window 11's object still shows a live peer:
    # lateness is the lateness check's to punish.
    assert net.last_upload_windows([1, 2], 11, span) == {1: 11, 2: 11}
    # Written before its put window opened, window 13's object proves nothing.
    assert net.last_upload_windows([1], 13, 0) == {}
    chain.close()
