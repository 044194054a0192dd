"""Options of a reference series written with an export (`--export-reference`), shared by the segqa commands."""

from __future__ import annotations

from SegmentationQALib.reference_series import PatientStudyInfo, ReferenceModality


def add_reference_series_arguments(parser) -> None:
    parser.add_argument("--export-reference", action="store_true",
                        help="when the reference is not DICOM, also write it as a new DICOM series")
    parser.add_argument("--reference-modality", choices=[m.value for m in ReferenceModality], default="CT")
    parser.add_argument("--patient-name", default="Anonymous^", help="for a reference series written with it")
    parser.add_argument("--patient-id", default=None, help="for a reference series written with it")
    parser.add_argument("--body-part", default=None, help="BodyPartExamined of a written reference series, e.g. "
                        "ABDOMEN (unknown by default: its Laterality is then written empty)")
    parser.add_argument("--laterality", choices=["R", "L"], default=None, help="for a paired body part")


def patient_info(args) -> PatientStudyInfo:
    return PatientStudyInfo(patient_name=args.patient_name, patient_id=args.patient_id or "",
                            body_part_examined=args.body_part or "", laterality=args.laterality or "")


def export_outputs(role: str, path: str, reference_paths: list[str]) -> dict:
    """The --json ``outputs`` of an export: the object, and the reference series when one was written with it."""
    outputs: dict = {role: path}
    if reference_paths:
        outputs["reference_series"] = list(reference_paths)
    return outputs
