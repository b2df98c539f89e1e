"""Where an unfinished job stands, as a resume would see it: settled flows, flows in
doubt, flows not yet sent (``aiob24flow jobs``, ``jobs show`` and the line a journaled
command prints when it resumes)."""

from __future__ import annotations

from typing import Any

import attrs

from .._durable import History
from .._errors import B24Error
from .._job import FAILED, OK_FALSE, OK_TRUE, OK_VALUE
from .._journal import JobRecord
from .._methods import ACTIVATE
from .._report import BulkReport

__all__ = ["Standing", "standing"]


@attrs.frozen
class Standing:
    """Where an unfinished job stands: the flows earlier runs settled (as a report), the
    ones in doubt (sent, no answer recorded) and how many a resume would send."""

    settled: BulkReport[Any]
    in_doubt: list[int]
    unsent: int

    def counts(self) -> dict[str, int]:
        """settled (succeeded, failed, unknown), in_doubt, not_sent."""
        return {
            "settled": len(self.settled),
            "succeeded": len(self.settled.succeeded),
            "failed": len(self.settled.failed),
            "unknown": len(self.settled.unknown),
            "in_doubt": len(self.in_doubt),
            "not_sent": self.unsent,
        }


def standing(record: JobRecord) -> Standing:
    """What running the job's command again would see, flow by flow (as the resume does:
    settled without a request, in doubt, answered, else to be sent)."""
    spec = record.spec
    history = History(
        record, ACTIVATE if spec.operation in ("activate_many", "set_active") else None
    )
    succeeded: dict[int, Any] = {}
    failed: dict[int, B24Error] = {}
    unknown: dict[int, B24Error] = {}
    in_doubt: list[int] = []
    unsent = 0

    def settle(flow_id: int, code: int, error: B24Error | None) -> None:
        if code in (OK_TRUE, OK_FALSE, OK_VALUE):  # set_*: the desired state; pin: its state
            succeeded[flow_id] = spec.desired if spec.desired is not None else code != OK_FALSE
        elif code == FAILED:
            failed[flow_id] = error or B24Error("failed")
        else:
            unknown[flow_id] = error or B24Error("did not converge")

    for flow_id in spec.ids:
        earlier = history.settled.get(flow_id)
        answered = history.answered(flow_id)
        if earlier is not None:
            settle(flow_id, earlier[0], earlier[2])
        elif history.in_doubt(flow_id) is not None:
            in_doubt.append(flow_id)
        elif answered is None or _pins_again(spec.operation, spec.desired, answered[0]):
            unsent += 1
        else:
            settle(flow_id, *answered)
    return Standing(BulkReport(succeeded, failed, unknown), in_doubt, unsent)


def _pins_again(operation: str, desired: bool | None, code: int) -> bool:
    """``set_pinned``: a pin that answered the other state is sent again."""
    return (
        operation == "set_pinned" and code in (OK_TRUE, OK_FALSE) and (code == OK_TRUE) != desired
    )
