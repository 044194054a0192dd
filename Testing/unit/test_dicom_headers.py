"""The fast header reader gives exactly what pydicom.dcmread(stop_before_pixels=True) gives, on every DICOM file in
the real data and pydicom's own test files, and covers the real data without falling back to pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from datapaths import shared_data_dir
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from DicomFidelityCommonLib.dicom import headers as dicom_headers
from DicomFidelityCommonLib.dicom import series as dicom_series


def _dicom_files() -> list[Path]:
    roots = [shared_data_dir(), Path(pydicom.__file__).parent / "data" / "test_files"]
    files = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.stat().st_size > 132:
                with open(path, "rb") as handle:
                    handle.seek(128)
                    if handle.read(4) == b"DICM" or root != roots[0]:
                        files.append(path)
    return files


def _pydicom(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def _fast(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dicom_headers.read_header(path)


def _covered(path) -> bool:
    with open(path, "rb") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dicom_headers._read(handle)
            return True
        except dicom_headers._NotCovered:
            return False


def assert_same_header(fast, slow):
    assert type(fast) is type(slow)
    assert fast.preamble == slow.preamble
    assert fast.filename == slow.filename
    assert fast.original_encoding == slow.original_encoding
    assert fast.original_character_set == slow.original_character_set
    assert fast.file_meta == slow.file_meta
    assert fast.file_meta.original_encoding == slow.file_meta.original_encoding
    assert fast == slow
    # every element, nested ones too, with its VR, value and where it was read from
    assert [(e.tag, e.VR, e.value, e.file_tell, e.is_undefined_length) for e in fast.iterall()] == \
        [(e.tag, e.VR, e.value, e.file_tell, e.is_undefined_length) for e in slow.iterall()]
    assert str(fast) == str(slow)


FILES = _dicom_files()


@pytest.mark.parametrize("path", FILES, ids=lambda p: "/".join(p.parts[-3:]))
def test_same_as_pydicom_on_every_test_file(path):
    try:
        slow = _pydicom(path)
    except Exception as exc:  # pydicom refuses it: so must we, with the same kind of error
        with pytest.raises(type(exc)):
            _fast(path)
        return
    assert_same_header(_fast(path), slow)


def test_real_data_takes_the_fast_path(shared_data):
    """Every DICOM file of the real data (implicit and explicit VR, JPEG 2000 CT, SEGs with undefined-length
    sequences) is read by the fast path, not handed to pydicom; every CT slice's key values by read_values."""
    real = [p for p in FILES if shared_data in p.parents]
    assert len(real) > 200
    assert [p for p in real if not _covered(p)] == []
    # and every CT slice's key values are read without building a dataset
    slices = [p for p in real if _pydicom(p).get("Modality") == "CT"]
    assert len(slices) > 180
    assert [p for p in slices if dicom_headers.read_values(p, dicom_series.SLICE_KEYWORDS) is None] == []


def _write(tmp_path, name, dataset: Dataset, syntax, **file_meta) -> Path:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = syntax
    for keyword, value in file_meta.items():
        setattr(dataset.file_meta, keyword, value)
    path = tmp_path / name
    dataset.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian,
                    little_endian=syntax != ExplicitVRBigEndian, enforce_file_format=True)
    return path


def _slice(character_set="ISO_IR 192") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = character_set
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Müller^Jürgen" if character_set == "ISO_IR 192" else "Doe^Jane"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.ImagePositionPatient = ["-125.000000", " 7.5", "1e2"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, "0.75"]
    ds.Rows, ds.Columns = 4, 4
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-D0050", "SRT", "Tissue"
    nested = Dataset()
    nested.ConceptNameCodeSequence = Sequence([code])
    ds.AnatomicRegionSequence = Sequence([code, nested])
    ds.add_new(0x00090010, "LO", "PRIVATE CREATOR")
    ds.add_new(0x00091001, "OB", b"\x01\x02" * 20000)  # a 40 KB private element: more than the first read
    ds.add_new(0x00091002, "DS", "3.25")
    ds.PixelData = np.zeros((4, 4), dtype=np.uint16).tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 8)  # trailing padding after the pixel data
    return ds


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
@pytest.mark.parametrize("undefined", [False, True], ids=["defined-length", "undefined-length"])
def test_synthetic_little_endian(tmp_path, syntax, undefined):
    ds = _slice()
    if undefined:
        ds["AnatomicRegionSequence"].is_undefined_length = True
        for item in ds.AnatomicRegionSequence:
            item.is_undefined_length_sequence_item = True
        ds.AnatomicRegionSequence[1]["ConceptNameCodeSequence"].is_undefined_length = True
    path = _write(tmp_path, "slice.dcm", ds, syntax)
    assert _covered(path)
    fast = _fast(path)
    assert_same_header(fast, _pydicom(path))
    assert fast.PatientName == "Müller^Jürgen"
    assert "PixelData" not in fast and 0xFFFCFFFC not in fast


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_other_syntaxes_go_to_pydicom(tmp_path, syntax):
    ds = _slice("ISO_IR 100")
    del ds[0x00091001]
    path = _write(tmp_path, "slice.dcm", ds, syntax)
    assert not _covered(path)
    assert_same_header(_fast(path), _pydicom(path))


def test_truncated_file_behaves_as_pydicom(tmp_path):
    path = _write(tmp_path, "slice.dcm", _slice(), ExplicitVRLittleEndian)
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: data.index(b"PRIVATE CREATOR") + 200])  # inside the 40 KB private element
    assert not _covered(cut)
    assert_same_header(_fast(cut), _pydicom(cut))


def test_not_dicom_is_refused_like_pydicom(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a DICOM file" * 20)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        _pydicom(path)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        _fast(path)


@pytest.mark.parametrize("path", [p for p in FILES if shared_data_dir() in p.parents],
                         ids=lambda p: "/".join(p.parts[-3:]))
def test_header_values_equal_pydicom_values(path):
    fast, slow = _fast(path), _pydicom(path)
    values = dicom_headers.header_values(fast, dicom_series.SLICE_KEYWORDS)
    for keyword, value in zip(dicom_series.SLICE_KEYWORDS, values):
        expected = slow.get(keyword)
        if expected is None or expected == "":
            assert value is None, keyword
        elif isinstance(expected, (pydicom.multival.MultiValue, list)) and keyword in (
                "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            assert value == tuple(float(v) for v in expected), keyword
        elif isinstance(expected, float):
            assert value == (float(expected),), keyword
        else:
            assert value == (expected[0] if isinstance(expected, pydicom.multival.MultiValue) else expected), keyword
    if "ImagePositionPatient" in slow:
        position = values[dicom_series.SLICE_KEYWORDS.index("ImagePositionPatient")]
        assert list(position.texts) == [str(v) for v in slow.ImagePositionPatient]
        # converted elements give the same as raw ones, texts too
        fast.ImagePositionPatient  # noqa: B018 (converts it)
        again = dicom_headers.header_values(fast, dicom_series.SLICE_KEYWORDS)
        assert again == values
        assert again[dicom_series.SLICE_KEYWORDS.index("ImagePositionPatient")].texts == position.texts
    # read straight from the file, without a dataset: the same values, and which keywords the header holds
    found = dicom_headers.read_values(path, dicom_series.SLICE_KEYWORDS)
    if found is not None:
        direct, present = found
        assert direct == values
        assert present == {keyword for keyword in dicom_series.SLICE_KEYWORDS if keyword in slow}
        if "ImagePositionPatient" in slow and slow.ImagePositionPatient:
            assert direct[0].texts == values[0].texts


def test_header_values_of_synthetic_slice(tmp_path):
    path = _write(tmp_path, "slice.dcm", _slice(), ImplicitVRLittleEndian)
    fast = _fast(path)
    position, orientation, spacing, rows, columns = dicom_headers.header_values(
        fast, ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"])
    assert position == (-125.0, 7.5, 100.0) and orientation == (1, 0, 0, 0, 1, 0) and spacing == (0.5, 0.75)
    assert (rows, columns) == (4, 4)
    assert position.texts == ("-125.000000", "7.5", "1e2")
    assert dicom_headers.header_values(fast, ["SliceThickness", "Modality"]) == [None, "CT"]
    direct, present = dicom_headers.read_values(path, ["ImagePositionPatient", "Rows", "SliceThickness"])
    assert (direct == [position, 4, None] and direct[0].texts == position.texts
            and present == {"ImagePositionPatient", "Rows"})


def test_read_values_leaves_unusual_files_to_the_full_reader(tmp_path):
    """An undefined-length sequence before the last wanted value, a VR other than the dictionary's, or a value
    that is not a number: None (the caller then reads the whole header with pydicom's rules)."""
    keywords = ["SOPInstanceUID", "ImagePositionPatient", "PixelSpacing"]
    ds = _slice()
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds["ReferencedImageSequence"].is_undefined_length = True
    assert dicom_headers.read_values(_write(tmp_path, "a.dcm", ds, ExplicitVRLittleEndian), keywords) is None
    assert dicom_headers.read_values(_write(tmp_path, "b.dcm", _slice(), ExplicitVRLittleEndian), keywords) is not None
    odd = _slice()
    del odd.ImagePositionPatient
    odd.add_new(0x00200032, "LO", "-125.0\\7.5\\1e2")  # the dictionary says DS
    assert dicom_headers.read_values(_write(tmp_path, "c.dcm", odd, ExplicitVRLittleEndian), keywords) is None
    path = _write(tmp_path, "d.dcm", _slice(), ImplicitVRLittleEndian)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"0.5\\0.75", b"0.5\\abcd"))  # PixelSpacing no longer numbers
    assert dicom_headers.read_values(path, keywords) is None
    assert dicom_headers.read_values(tmp_path / "d.dcm", ["SOPInstanceUID"]) is not None  # stops before it


def test_series_reads_whole_headers_only_when_asked(tmp_path):
    for k in range(4):
        ds = _slice()
        ds.SeriesInstanceUID = "1.2.3.4"
        ds.FrameOfReferenceUID = "1.2.3.5"  # one series, one frame of reference (read_image_series checks it)
        ds.ImagePositionPatient = [0, 0, k * 2.5]
        _write(tmp_path, f"{k}.dcm", ds, ExplicitVRLittleEndian)
    series = dicom_series.read_image_series(tmp_path)
    assert isinstance(series.datasets, dicom_series.LazyHeaders)
    assert series.datasets._loaded[0] is not None and all(d is None for d in series.datasets._loaded[1:])
    assert [float(ds.ImagePositionPatient[2]) for ds in series.datasets] == [0, 2.5, 5, 7.5]
    assert_same_header(series.datasets[2], _pydicom(series.paths[2]))


# ------------------------------------------------------------------------------------------------ partial headers
PARTIAL_KEYWORDS = ("SOPInstanceUID", "PatientID", "PatientName", "StudyDate", "Modality", "ImagePositionPatient",
                    "PixelSpacing", "Rows", "NumberOfFrames", "AnatomicRegionSequence", "ReferencedSeriesSequence",
                    "ReferencedFrameOfReferenceSequence", "ReferencedRTPlanSequence", "ReferencedStructureSetSequence",
                    "SegmentSequence", "SharedFunctionalGroupsSequence")


def _elements(dataset) -> list[tuple]:
    return [(e.tag, e.VR, e.value, e.file_tell, e.is_undefined_length) for e in dataset.iterall()]


def assert_partial_is_the_full_header_cut(partial, full, keywords):
    assert type(partial) is type(full)
    assert partial.preamble == full.preamble and partial.file_meta == full.file_meta
    assert partial.original_encoding == full.original_encoding
    assert partial.original_character_set == full.original_character_set
    cut = Dataset()
    for element in full:  # the kept elements (and the character set), each converted as pydicom converts it
        if element.keyword in keywords or element.tag == 0x00080005:
            cut.add(element)
    assert _elements(partial) == _elements(cut)


@pytest.mark.parametrize("path", FILES, ids=lambda p: "/".join(p.parts[-3:]))
def test_partial_header_is_the_full_header_cut_to_its_keywords(path):
    """read_partial_header steps over what it is not asked for (undefined-length sequences too) and keeps the rest
    exactly as read_header reads it; it covers every file of the real data, and refuses what the full fast path
    refuses (pydicom's reader then judges)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partial = dicom_headers.read_partial_header(path, PARTIAL_KEYWORDS)
        if not _covered(path):
            assert partial is None
            return
        full = _fast(path)
    if shared_data_dir() in path.parents:
        assert partial is not None
    if partial is not None:
        assert_partial_is_the_full_header_cut(partial, full, PARTIAL_KEYWORDS)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
@pytest.mark.parametrize("keep", [False, True], ids=["sequence-skipped", "sequence-kept"])
def test_partial_header_of_synthetic_slice(tmp_path, syntax, keep):
    ds = _slice()
    ds["AnatomicRegionSequence"].is_undefined_length = True  # nested undefined lengths: skipped by their delimiters
    for item in ds.AnatomicRegionSequence:
        item.is_undefined_length_sequence_item = True
    ds.AnatomicRegionSequence[1]["ConceptNameCodeSequence"].is_undefined_length = True
    path = _write(tmp_path, "slice.dcm", ds, syntax)
    keywords = ("PatientName", "ImagePositionPatient", "Rows", *(["AnatomicRegionSequence"] if keep else []))
    partial = dicom_headers.read_partial_header(path, keywords)
    assert_partial_is_the_full_header_cut(partial, _pydicom(path), keywords)
    assert partial.PatientName == "Müller^Jürgen" and ("AnatomicRegionSequence" in partial) == keep
    assert 0x00091001 not in partial and "SOPInstanceUID" not in partial


def test_read_values_of_a_file_cut_inside_a_long_element(tmp_path):
    """Past the first read (4 KB) the values are read on; a file that ends inside an element is the full reader's
    (pydicom's), as read_header leaves it."""
    path = _write(tmp_path, "slice.dcm", _slice(), ExplicitVRLittleEndian)
    data = path.read_bytes()
    assert data.index(b"PRIVATE CREATOR") + 40000 > dicom_headers.FIRST_VALUES_BYTES
    assert dicom_headers.read_values(path, ["ImagePositionPatient"])[0][0] == (-125.0, 7.5, 100.0)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: data.index(b"PRIVATE CREATOR") + 200])
    assert dicom_headers.read_values(cut, ["ImagePositionPatient"]) is None and not _covered(cut)
    assert dicom_headers.read_values(cut, ["SOPInstanceUID"])[0] == [_pydicom(path).SOPInstanceUID]


# ------------------------------------------------------------------------------------------------ raw items
def _pydicom_value(element):
    """What header_values (and RawItem.get) give for an element pydicom converted; IS as int."""
    value = element.value
    if value is None or value == "":
        return None
    many = isinstance(value, (list, pydicom.multival.MultiValue))
    if element.VR == "DS":
        return tuple(float(v) for v in value) if many else (float(value),)
    if element.VR in ("US", "IS"):
        return None if many else int(value)
    return str(value[0] if many else value) or None


def _compare_items(raw_items, items, counts) -> None:
    assert len(raw_items) == len(items)
    for raw, item in zip(raw_items, items):
        assert set(raw.elements) == {int(tag) for tag in item.keys()}
        for element in item:
            if not element.keyword:
                continue
            if element.VR == "SQ":
                _compare_items(raw.items(element.keyword), list(element.value), counts)
            elif element.VR in ("UI", "CS", "DS", "US", "IS"):
                expected = _pydicom_value(element)
                if expected is None and element.VR in ("US", "IS") and element.value not in (None, ""):
                    with pytest.raises(dicom_headers.NotRaw):  # several values: pydicom's to convert
                        raw.get(element.keyword)
                    continue
                assert raw.get(element.keyword) == expected, element.keyword
                counts[element.VR] = counts.get(element.VR, 0) + 1


def test_raw_items_equal_pydicom_values(shared_data):
    """Every sequence of every file of the real data, read raw (RawItem, no dataset per item): the same items, the
    same elements in each, and the same UI, CS, DS, US and IS values as pydicom converts them."""
    counts: dict[str, int] = {}
    sequences = 0
    for path in (p for p in FILES if shared_data in p.parents):
        fast, slow = _fast(path), _pydicom(path)
        for element in slow:
            if element.VR != "SQ" or not element.keyword:
                continue
            raw = dicom_headers.raw_items(fast, element.keyword)
            if raw is None:  # undefined length: pydicom's reader has parsed it already
                assert fast[element.tag].is_undefined_length
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _compare_items(raw, list(element.value), counts)
            sequences += 1
    assert sequences > 500 and counts.get("UI", 0) > 2000 and counts.get("IS", 0) > 10 and counts.get("DS", 0) > 100
