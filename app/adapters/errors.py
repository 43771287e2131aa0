"""The one error type of the adapters: a payload (or one element of a batch) that cannot be used.

`reason` is a short machine-readable slug that goes to guard.deadletter and to metrics
(`not_json`, `too_large`, `unknown_shape`, `missing_field:objectId`, `bad_type:occurredAt`, ...);
the message is for people. Neither ever contains field values, so no e-mail address or phone
number can leak into a dead letter's reason or a log line.
"""

from __future__ import annotations


class AdapterError(ValueError):
    """An unusable vendor payload. `index` is the element's position when it came from a batch."""

    def __init__(self, reason: str, message: str | None = None, index: int | None = None) -> None:
        self.reason = reason
        self.index = index
        self.message = message or reason
        text = self.message
        if index is not None:
            text = f"element {index}: {text}"
        super().__init__(text)

    def at(self, index: int) -> AdapterError:
        """The same error, located at a batch position."""
        return AdapterError(self.reason, self.message, index)


def missing(field: str, where: str = "") -> AdapterError:
    """`missing_field:<field>`."""
    return AdapterError(f"missing_field:{field}", f"{where}{' ' if where else ''}has no {field}")


def bad_type(field: str, expected: str, where: str = "") -> AdapterError:
    """`bad_type:<field>`."""
    return AdapterError(f"bad_type:{field}", f"{where}{' ' if where else ''}{field} is not {expected}")
