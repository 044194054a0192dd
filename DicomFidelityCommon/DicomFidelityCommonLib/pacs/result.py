"""What a send did, per object: the results every module's `send` command prints and writes as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from DicomFidelityCommonLib.errors import DicomFidelityError
from DicomFidelityCommonLib.pacs.objects import ObjectHeader

LABELMAP_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
BINARY_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


class PacsError(DicomFidelityError):
    """The destination could not be reached, refused us, or refused an object (names the destination or file)."""


class Protocol(Enum):
    DIMSE = "dimse"  # C-STORE over the DICOM upper layer
    STOW_RS = "stow-rs"  # DICOMweb store over HTTP(S)


class SendAction(Enum):
    """How an object went: as it is, transcoded, or converted (LABELMAP -> BINARY SEG, transcoded if needed)."""

    AS_IS = "as-is"
    TRANSCODED = "transcoded"
    CONVERTED = "converted-to-binary"
    FAILED = "failed"


@dataclass
class SentObject:
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    action: SendAction = SendAction.FAILED
    sent_sop_class_uid: str = ""
    sent_sop_instance_uid: str = ""
    sent_series_instance_uid: str = ""
    sent_transfer_syntax_uid: str = ""
    status: int | None = None  # the DIMSE status, or the STOW-RS failure reason
    problem: str = ""
    converted_path: str = ""  # the BINARY SEG made for a peer without LABELMAP (kept only when asked)
    sent_study_instance_uid: str = ""
    verified: bool | None = None  # listed by the destination when queried back (None: not queried; pacs.verify)

    @property
    def ok(self) -> bool:
        return self.action != SendAction.FAILED and self.verified is not False

    def mark_sent(self, target: ObjectHeader, syntax: str, action: SendAction) -> None:
        """Stored: ``target`` (this object, or the BINARY SEG made of it) in ``syntax``, by ``action``."""
        self.action = action
        self.sent_sop_class_uid = target.sop_class_uid
        self.sent_sop_instance_uid = target.sop_instance_uid
        self.sent_series_instance_uid = target.series_instance_uid
        self.sent_study_instance_uid = target.study_instance_uid
        self.sent_transfer_syntax_uid = syntax

    def to_json(self) -> dict:
        return {"path": self.path, "ok": self.ok, "action": self.action.value, "sop_class_uid": self.sop_class_uid,
                "sop_instance_uid": self.sop_instance_uid, "transfer_syntax_uid": self.transfer_syntax_uid,
                "sent_sop_class_uid": self.sent_sop_class_uid, "sent_sop_instance_uid": self.sent_sop_instance_uid,
                "sent_series_instance_uid": self.sent_series_instance_uid,
                "sent_study_instance_uid": self.sent_study_instance_uid,
                "sent_transfer_syntax_uid": self.sent_transfer_syntax_uid, "status": self.status,
                "problem": self.problem, "converted_path": self.converted_path, "verified": self.verified}


@dataclass
class SendResult:
    destination: str
    protocol: Protocol
    calling_aet: str
    objects: list[SentObject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    verification_problem: str = ""  # why the stored objects could not be queried back ("" if they were, or not asked)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.objects)

    @property
    def verified(self) -> int:
        return sum(o.verified is True for o in self.objects)

    @property
    def failed(self) -> list[SentObject]:
        return [o for o in self.objects if not o.ok]

    def count(self, action: SendAction) -> int:
        return sum(o.action == action for o in self.objects)

    def summary(self) -> str:
        parts = [f"{self.count(a)} {a.value}" for a in SendAction if self.count(a)]
        checked = f"; {self.verified} found when queried back" if any(o.verified is not None for o in self.objects) \
            else "; not verified" if self.verification_problem else ""
        return f"sent {len(self.objects) - len(self.failed)}/{len(self.objects)} objects to {self.destination} " \
               f"by {self.protocol.value} ({', '.join(parts) or 'nothing'}){checked}"

    def first_failure(self) -> PacsError | None:
        failed = self.failed
        if not failed:
            return None
        more = f" (and {len(failed) - 1} more objects failed; see --json)" if len(failed) > 1 else ""
        return PacsError(f"not sent to {self.destination}: {failed[0].problem}{more}", failed[0].path)

    def to_json(self) -> dict:
        return {"destination": self.destination, "protocol": self.protocol.value, "calling_aet": self.calling_aet,
                "sent": len(self.objects) - len(self.failed), "failed": len(self.failed),
                "actions": {a.value: self.count(a) for a in SendAction}, "verified": self.verified,
                "verification_problem": self.verification_problem,
                "objects": [o.to_json() for o in self.objects]}
