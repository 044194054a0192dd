"""DICOM reading shared by every object we read or write: headers (fast path), image series, deflate."""
