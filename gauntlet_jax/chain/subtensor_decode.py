"""What a subtensor node answers, turned into our values and typed errors; all of it hostile.

Storage values: non-negative integers (`as_int`), per-uid vectors (`as_vector`) and
`Commitments.CommitmentOf` (`decode_commitment`: raw fields only, validated). Refusals: the
transaction pool's JSON-RPC errors (`pool_rejection` → TransactionRejected) and the
`ExtrinsicFailed` event's dispatch error (`dispatch_error` → the pallet's typed error).
"""

from __future__ import annotations

import re
from typing import Any

from substrateinterface import SubstrateInterface

from gauntlet_jax.chain.base import MAX_COMMITMENT_CHARS, validate_commitment
from gauntlet_jax.chain.errors import (
    CUSTOM_TX_ERRORS,
    ChainDataError,
    TransactionRejected,
    pallet_error,
)
from gauntlet_jax.errors import ChainError

RAW_FIELD_MAX = 128  # the largest `Data::RawN` variant
_RAW_VARIANT = re.compile(r"^Raw(\d{1,3})$")


def as_int(value: object, what: str) -> int:
    """A storage integer (absent = 0); ChainDataError unless it is a non-negative int."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ChainDataError(f"{what}: expected a non-negative integer, got {value!r}")
    return value


def as_vector(value: object, n: int, fill: Any) -> list[Any]:
    """A per-uid storage vector padded (or cut) to n entries."""
    items = list(value) if isinstance(value, (list, tuple)) else []
    return items + [fill] * (n - len(items))


def decode_commitment(value: object, who: str) -> str | None:
    """A `Commitments.CommitmentOf` value → the committed string, validated; None when absent.

    Only `RawN` fields count (concatenated in order); the bytes must be printable ASCII and fit
    MAX_COMMITMENT_CHARS."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("info"), dict):
        raise ChainDataError(f"{who}: unexpected shape {type(value).__name__}")
    fields = value["info"].get("fields")
    if not isinstance(fields, (list, tuple)) or not fields:
        raise ChainDataError(f"{who}: no fields")
    raw = bytearray()
    for entry in fields:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ChainDataError(f"{who}: malformed field")
        ((variant, payload),) = entry.items()
        match = _RAW_VARIANT.match(str(variant))
        if not match:
            raise ChainDataError(f"{who}: field kind {str(variant)[:32]!r} is not raw data")
        if isinstance(payload, str) and payload.startswith("0x"):
            try:
                chunk = bytes.fromhex(payload[2:])
            except ValueError:
                raise ChainDataError(f"{who}: field is not hex") from None
        elif isinstance(payload, (bytes, bytearray)):
            chunk = bytes(payload)
        else:
            raise ChainDataError(f"{who}: field payload of type {type(payload).__name__}")
        if len(chunk) != int(match.group(1)) or len(chunk) > RAW_FIELD_MAX:
            raise ChainDataError(f"{who}: {variant} holds {len(chunk)} bytes")
        raw += chunk
        if len(raw) > MAX_COMMITMENT_CHARS:
            raise ChainDataError(f"{who}: longer than {MAX_COMMITMENT_CHARS} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ChainDataError(f"{who}: not ASCII") from None
    return validate_commitment(text, who)


def pool_rejection(error: object, what: str) -> TransactionRejected:
    """A JSON-RPC error of author_submit* → TransactionRejected (code/reason when known)."""
    if not isinstance(error, dict):
        return TransactionRejected(f"{what} rejected: {str(error)[:300]}")
    message = str(error.get("message", ""))
    data = str(error.get("data", ""))
    code = error.get("code")
    custom = re.search(r"Custom error: (\d+)", data)
    if custom:
        number = int(custom.group(1))
        reason = CUSTOM_TX_ERRORS.get(number, f"Custom({number})")
        return TransactionRejected(
            f"{what} rejected by the transaction pool: {reason} (custom code {number})",
            code=number,
            reason=reason,
        )
    text = f"{message} {data}".lower()
    if "already imported" in text or code == 1013:
        reason = "AlreadyImported"
    elif "stale" in text or "outdated" in text:
        reason = "Stale"
    elif "priority is too low" in text or code == 1014:
        reason = "PriorityTooLow"
    elif "inability to pay" in text or "payment" in text:
        reason = "Payment"
    elif "bad signature" in text or "badproof" in text.replace(" ", ""):
        reason = "BadProof"
    else:
        reason = None
    return TransactionRejected(
        f"{what} rejected: {message} {data}".strip()[:300],
        code=code if isinstance(code, int) else None,
        reason=reason,
    )


def dispatch_error(si: SubstrateInterface, attributes: object, what: str) -> ChainError:
    """The `dispatch_error` of an ExtrinsicFailed event → the typed error."""
    if isinstance(attributes, dict):
        error = attributes.get("dispatch_error")
    elif isinstance(attributes, (list, tuple)) and attributes:
        error = attributes[0]
    else:
        error = None
    if isinstance(error, dict) and "Module" in error:
        module = error["Module"]
        if isinstance(module, (list, tuple)):
            pallet_index, error_index = module[0], module[1]
        else:
            pallet_index, error_index = module.get("index"), module.get("error")
        if isinstance(error_index, str):
            error_index = int(error_index[2:4], 16)  # first byte of the [u8; 4]
        elif isinstance(error_index, (list, tuple, bytes)):
            error_index = int(error_index[0])
        pallet = _pallet_name(si, int(pallet_index))
        found = si.metadata.get_module_error(
            module_index=int(pallet_index), error_index=int(error_index)
        )
        if found is None:
            return pallet_error(f"Error{error_index}", f"{what} failed", pallet=pallet)
        docs = " ".join(found.docs) if isinstance(found.docs, list) else str(found.docs or "")
        return pallet_error(found.name, f"{what} failed", pallet=pallet, docs=docs)
    if isinstance(error, dict) and error:
        name = next(iter(error))
        return pallet_error(str(name), f"{what} failed", pallet="System")
    if isinstance(error, str):
        return pallet_error(error, f"{what} failed", pallet="System")
    return ChainError(f"{what} failed: {attributes!r}"[:300])


def _pallet_name(si: SubstrateInterface, index: int) -> str:
    for pallet in si.metadata.pallets:
        if (
            int(pallet["index"].value if hasattr(pallet["index"], "value") else pallet["index"])
            == index
        ):
            return str(pallet.name)
    return f"Pallet{index}"
