"""The chain's typed errors, and the runtime's error names that map onto them.

A backend raises these for what went wrong talking to a chain: the endpoint (ChainConnectionError,
ChainTimeout), what it answered (ChainDataError), our own refusals before sending (HotkeyError,
InvalidWeights, RuntimeCallMissing, NodeVersionTooOld), the transaction pool (TransactionRejected) and
the pallets (`PalletError` and one subclass per subtensor error name a node acts on; `pallet_error`
picks the class by name, `CUSTOM_TX_ERRORS` names the pool's custom validity codes). The local
chain raises the same pallet errors for the same checks, so callers handle both backends alike.
"""

from __future__ import annotations

from gauntlet_jax.errors import (
    ChainError,
    ConfigError,
    RegistrationError,
    StateError,
    VersionMismatch,
)


class ChainConnectionError(ChainError):
    """The endpoint could not be reached, or the connection dropped and a retry failed too."""


class ChainTimeout(ChainConnectionError):
    """The endpoint did not answer within the configured timeout."""


class ChainDataError(ChainError):
    """Data read from the chain is malformed (wrong type, too long, forbidden characters …)."""


class ChainBusy(ChainConnectionError):
    """The embedded chain's file stayed locked by another writer past the busy timeout
    (transient: the next attempt may succeed)."""


class ChainStoreCorrupt(ChainDataError, StateError):
    """The embedded chain's file is corrupt, truncated, replaced by another file or of another
    schema (permanent: retrying the same file will not help)."""


class HotkeyError(ChainError, RegistrationError):
    """A hotkey could not be loaded. Messages never contain the secret."""


class InvalidWeights(ChainError):
    """Weights or uids are not sendable (NaN, negative, lengths differ, uid out of u16 range)."""


class RuntimeCallMissing(ChainError, ConfigError):
    """The runtime lacks the call the subnet's configuration needs (e.g. commit-reveal is on and
    the runtime has neither `commit_timelocked_weights` nor `commit_weights`); nothing was sent."""


class NodeVersionTooOld(ChainError, VersionMismatch):
    """The subnet's WeightsVersionKey is above this node's version key: every weight call would
    be refused (IncorrectWeightVersionKey), so the validator does not start."""


class InsufficientBalance(ChainError, RegistrationError):
    """The coldkey's free balance does not cover the registration burn; nothing was sent."""


class ColdkeyMismatch(ChainError, RegistrationError):
    """The hotkey already belongs to another coldkey; nothing was sent."""


class TimelockedRevealMissed(ChainError):
    """A timelocked commit's reveal epoch passed and the runtime did not apply the weights (no
    drand pulse for its round, or the runtime refused them)."""


class TransactionRejected(ChainError):
    """The transaction pool refused the extrinsic before it reached a block (`Invalid Transaction`).

    `code` is the runtime's custom validity code where there is one, `reason` its name when known.
    """

    def __init__(self, message: str, code: int | None = None, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


class PalletError(ChainError):
    """A dispatch error from a pallet (`ExtrinsicFailed` with a `Module` error), or the same check
    done locally before sending. `name` is the pallet's error name, e.g. `SettingWeightsTooFast`."""

    pallet_default = "SubtensorModule"

    def __init__(
        self, name: str | None = None, detail: str = "", pallet: str | None = None, docs: str = ""
    ) -> None:
        self.name = name or type(self).__name__
        self.pallet = pallet or self.pallet_default
        self.detail = detail
        self.docs = docs
        text = f"{self.pallet}.{self.name}"
        if detail:
            text += f": {detail}"
        if docs:
            text += f" ({docs})" if detail else f": {docs}"
        super().__init__(text)


class WeightsRateLimited(PalletError):
    """Base of the two rate-limit errors of weights."""


class SettingWeightsTooFast(WeightsRateLimited):
    """Fewer than WeightsSetRateLimit blocks since this uid's LastUpdate."""


class CommittingWeightsTooFast(WeightsRateLimited):
    """Fewer than WeightsSetRateLimit blocks since this uid's last commit."""


class NotRegistered(PalletError, RegistrationError):
    """The signing hotkey is not registered (on this subnet or at all)."""


class HotKeyNotRegisteredInSubNet(NotRegistered):
    pass


class HotKeyNotRegisteredInNetwork(NotRegistered):
    pass


class HotKeyAccountNotExists(NotRegistered):
    pass


class SubnetNotExists(PalletError, RegistrationError):
    """The netuid does not exist."""


class SubNetworkDoesNotExist(SubnetNotExists):
    """Older runtimes' name for SubnetNotExists."""


class IncorrectWeightVersionKey(PalletError, VersionMismatch):
    pass


class CommitRevealEnabled(PalletError):
    pass


class CommitRevealDisabled(PalletError):
    pass


class WeightVecNotEqualSize(PalletError):
    pass


class UidVecContainInvalidOne(PalletError):
    pass


class UidsLengthExceedUidsInSubNet(PalletError):
    pass


class DuplicateUids(PalletError):
    pass


class NeuronNoValidatorPermit(PalletError, RegistrationError):
    pass


class WeightVecLengthIsLow(PalletError):
    pass


class MaxWeightExceeded(PalletError):
    pass


class NotEnoughStakeToSetWeights(PalletError):
    pass


class CanNotSetRootNetworkWeights(PalletError):
    pass


class NoWeightsCommitFound(PalletError):
    pass


class InvalidRevealCommitHashNotMatch(PalletError):
    pass


class RevealTooEarly(PalletError):
    pass


class ExpiredWeightCommit(PalletError):
    pass


class TooManyUnrevealedCommits(PalletError):
    pass


class IncorrectCommitRevealVersion(PalletError):
    pass


class BadOrigin(PalletError):
    pallet_default = "System"


# Pallet error name → class. Any other name becomes a plain PalletError carrying the name.
PALLET_ERRORS: dict[str, type[PalletError]] = {
    cls.__name__: cls
    for cls in (
        SettingWeightsTooFast,
        CommittingWeightsTooFast,
        HotKeyNotRegisteredInSubNet,
        HotKeyNotRegisteredInNetwork,
        HotKeyAccountNotExists,
        SubnetNotExists,
        SubNetworkDoesNotExist,
        IncorrectWeightVersionKey,
        CommitRevealEnabled,
        CommitRevealDisabled,
        WeightVecNotEqualSize,
        UidVecContainInvalidOne,
        UidsLengthExceedUidsInSubNet,
        DuplicateUids,
        NeuronNoValidatorPermit,
        WeightVecLengthIsLow,
        MaxWeightExceeded,
        NotEnoughStakeToSetWeights,
        CanNotSetRootNetworkWeights,
        NoWeightsCommitFound,
        InvalidRevealCommitHashNotMatch,
        RevealTooEarly,
        ExpiredWeightCommit,
        TooManyUnrevealedCommits,
        IncorrectCommitRevealVersion,
        BadOrigin,
    )
}


def pallet_error(
    name: str, detail: str = "", pallet: str = "SubtensorModule", docs: str = ""
) -> PalletError:
    """The typed error for a pallet error name; unknown names give a PalletError with that name."""
    cls = PALLET_ERRORS.get(name, PalletError)
    return cls(name=name, detail=detail, pallet=pallet, docs=docs)


# subtensor's `CustomTransactionError` codes (InvalidTransaction::Custom(code)), as of 2025-09.
CUSTOM_TX_ERRORS: dict[int, str] = {
    0: "ColdkeyInSwapSchedule",
    1: "StakeAmountTooLow",
    2: "BalanceTooLow",
    3: "SubnetNotExists",
    4: "HotkeyAccountDoesntExist",
    5: "NotEnoughStakeToWithdraw",
    6: "RateLimitExceeded",
    7: "InsufficientLiquidity",
    8: "SlippageTooHigh",
    9: "TransferDisallowed",
    10: "HotKeyNotRegisteredInNetwork",
    11: "InvalidIpAddress",
    12: "ServingRateLimitExceeded",
    13: "InvalidPort",
    14: "ZeroMaxAmount",
    15: "InvalidRevealRound",
    16: "CommitNotFound",
    17: "CommitBlockNotInRevealRange",
    18: "InputLengthsUnequal",
    19: "UidNotFound",
    20: "EvmKeyAssociateRateLimitExceeded",
    255: "BadRequest",
}
