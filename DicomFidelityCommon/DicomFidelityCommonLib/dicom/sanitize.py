"""Patient and study attributes copied from a source object into ours. A value invalid for its VR (an anonymiser's
hashed dates, lowercase codes, a sex that is not M, F or O) is written empty where the attribute is Type 2 and left
out where it is Type 3, each named in a warning: what we write stays valid even when its source is not."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                          "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                          "StudyDescription")
# Type 2 in the Patient and General Study modules: present, empty when unknown. The others here are Type 1 or 3.
TYPE_2 = frozenset({"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"})
ENUMERATED = {"PatientSex": frozenset({"M", "F", "O"})}


def problem(source: Dataset, keyword: str) -> str | None:
    """Why the source's value of ``keyword`` is not valid for its VR (or its defined terms), or None."""
    element = source[keyword]
    values = element.value if isinstance(element.value, (list, MultiValue)) else [element.value]
    for value in values:
        if value in (None, ""):
            continue
        try:
            validate_value(element.VR, value, config.RAISE)
        except (ValueError, TypeError) as exc:
            return f"is not a valid {element.VR} ({str(exc).splitlines()[0][:80]})"
    allowed = ENUMERATED.get(keyword)
    if allowed is not None and str(element.value) not in allowed | {""}:
        return f"is not one of {', '.join(sorted(allowed))}"
    return None


def copy_valid(source: Dataset | None, target: Dataset, keywords: Iterable[str] = PATIENT_STUDY_KEYWORDS,
               what: str = "the source") -> list[str]:
    """Copy ``keywords`` present and valid in ``source`` to ``target``; invalid Type 2 values become empty, invalid
    others are left out. Returns one warning per value not copied."""
    warnings = []
    if source is None:
        return warnings
    for keyword in keywords:
        if keyword not in source:
            continue
        reason = problem(source, keyword)
        if reason is None:
            target[keyword] = copy.deepcopy(source[keyword])
            continue
        shown = str(source[keyword].value)
        if keyword in TYPE_2:
            setattr(target, keyword, "")
            warnings.append(f"{keyword} {shown!r} of {what} {reason}; written empty")
        else:
            if keyword in target:
                del target[keyword]
            warnings.append(f"{keyword} {shown!r} of {what} {reason}; left out")
    return warnings


def sanitized(source: Dataset, what: str = "the reference") -> tuple[Dataset, list[str]]:
    """``source`` itself when its patient and study values are valid, else a copy with them fixed as copy_valid
    does (for writers, such as highdicom, that copy them from the source dataset)."""
    if not any(keyword in source and problem(source, keyword) for keyword in PATIENT_STUDY_KEYWORDS):
        return source, []
    fixed = copy.deepcopy(source)  # a header (no pixel data): the source itself is never changed
    return fixed, copy_valid(source, fixed, PATIENT_STUDY_KEYWORDS, what)
