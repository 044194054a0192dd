"""Every piece of pydicom's non-public API we use, in one place.

Our fast paths (header reading, SEG streaming in and out, pre-encoded elements) work at the level of pydicom's own
reader and writer: raw element records, dataset parsing from a position, element encoding, and a dataset's
original encoding. None of that is pydicom's documented API, so it is imported only here, and
Testing/unit/test_architecture.py checks that no other module imports it and that each name still behaves as we
rely on. Tested against pydicom 3.0.2 (the version Slicer 5.12 bundles, and the newest on PyPI when written; the
test suite runs under both ./run.sh test and ./run.sh test-slicer-pins). A pydicom release that changes these shows
up as a failure of that test, not as wrong files.
"""

from __future__ import annotations

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble, read_sequence
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.values import convert_string

TESTED_PYDICOM_VERSIONS = ("3.0.2",)

read_file_meta_info = _read_file_meta_info


def character_set(dataset) -> list[str]:
    """The character set a parsed dataset's strings are decoded with (pydicom keeps it privately)."""
    return dataset._character_set


__all__ = [
    "EXPLICIT_VR_LENGTH_32", "TESTED_PYDICOM_VERSIONS", "DicomBytesIO", "RawDataElement", "character_set",
    "convert_encodings", "convert_string", "default_encoding", "empty_value_for_VR", "read_dataset",
    "read_file_meta_info", "read_preamble", "read_sequence", "write_data_element", "write_dataset",
    "write_file_meta_info",
]
