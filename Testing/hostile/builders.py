"""Hostile inputs for the CLIs, built at test time from ../shared/data (nothing is committed).

Each case is a small, real file broken in one way, so a failure points at one reader check. ``CASES`` maps a case
name to a builder ``build(work, data) -> Run``; the runner (test_hostile_cli.py) runs the command and checks the
contract: exit code, one ``error:`` line naming the file, no traceback, no output left, bounded memory.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

CT3 = "dcmqi/segmentations/ct-3slice"
LIVER_SEG = "dcmqi/segmentations/liver.dcm"
LIVER_LABEL = "dcmqi/segmentations/liver_seg.nrrd"
TOTALSEG = "totalsegmentator/reference_files"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass
class Run:
    """One CLI run: the command, its arguments, the output folder that must stay empty, the names it may blame."""

    command: str  # "segqa" or "dosealign"
    args: list[str]
    output_dir: Path
    names: set[str]  # basenames of which one must appear in the error line (the user's input at fault)
    json_path: Path | None = None
    expected_exit: int = 1
    notes: list[str] = field(default_factory=list)
    file_size_limit: int | None = None  # RLIMIT_FSIZE for the run: a write past it fails as on a full disk


# ---------------------------------------------------------------- low-level editing helpers
def _lenient():
    """Write values a validating writer would refuse (NaN, negative spacing): that is the point of the cases."""
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


def _set_raw(ds: Dataset, keyword: str, text: str, vr: str = "DS") -> None:
    """Set a value as its raw text, bypassing pydicom's conversion (which refuses 'nan')."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    tag = tag_for_keyword(keyword)
    raw = text.encode("ascii")
    if len(raw) % 2:
        raw += b" "
    ds[tag] = RawDataElement(pydicom.tag.Tag(tag), vr, len(raw), raw, 0, False, True)


def _save(ds: Dataset, path: Path, new_file: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=new_file)
    return path


def _copy_ct(data: Path, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted((data / CT3).glob("*.dcm")):
        target = folder / source.name
        shutil.copyfile(source, target)
        paths.append(target)
    return paths


def _edit(path: Path, edit: Callable[[Dataset], None], target: Path | None = None) -> Path:
    ds = pydicom.dcmread(path)
    edit(ds)
    return _save(ds, target or path)


def _corrupt_header(path: Path, start: int = 700, length: int = 400) -> Path:
    """Garble part of the header (uncompressed pixel bytes have no checksum: garbling them is undetectable)."""
    data = bytearray(path.read_bytes())
    data[start:start + length] = bytes((i * 151 + 7) % 256 for i in range(length))
    path.write_bytes(bytes(data))
    return path


def _truncate(path: Path, keep: float | int) -> Path:
    data = path.read_bytes()
    size = keep if isinstance(keep, int) else int(len(data) * keep)
    path.write_bytes(data[:size])
    return path


# ---------------------------------------------------------------- CT reference series (segqa export-seg)
def _export_seg_run(work: Path, data: Path, reference: Path, names: set[str], segmentation: Path | None = None,
                    extra: list[str] | None = None) -> Run:
    segmentation = segmentation or data / LIVER_LABEL
    out = work / "out"
    json_path = work / "result.json"
    return Run("segqa", ["export-seg", "--segmentation", str(segmentation), "--reference", str(reference),
                         "--output-dir", str(out), "--quiet", "--json", str(json_path), *(extra or [])],
               out, names, json_path)


def _ct_case(edit_slice: Callable[[Dataset], None], which: tuple[int, ...] = (1,)):
    """A copy of the 3-slice CT with ``edit_slice`` applied to the slices ``which``, renamed bad_*.dcm."""

    def build(work: Path, data: Path) -> Run:
        _lenient()
        folder = work / "ct_hostile"
        paths = _copy_ct(data, folder)
        blamed = {folder.name}
        for index in which:
            bad = paths[index].with_name(f"bad_{paths[index].name}")
            _edit(paths[index], edit_slice, bad)
            paths[index].unlink()
            blamed.add(bad.name)
        return _export_seg_run(work, data, folder, blamed)

    return build


def _orientation(text: str):
    return lambda ds: _set_raw(ds, "ImageOrientationPatient", text)


def _ct_two_frames_of_reference(work: Path, data: Path) -> Run:
    return _ct_case(lambda ds: setattr(ds, "FrameOfReferenceUID", generate_uid()), (2,))(work, data)


def _ct_all(edit_slice):
    return _ct_case(edit_slice, (0, 1, 2))


def _ct_missing_ipp(ds: Dataset) -> None:
    del ds.ImagePositionPatient


def _ct_duplicate_position(work: Path, data: Path) -> Run:
    first = pydicom.dcmread(sorted((data / CT3).glob("*.dcm"))[0], stop_before_pixels=True)
    return _ct_case(lambda ds: setattr(ds, "ImagePositionPatient", list(first.ImagePositionPatient)), (1,))(work, data)


def _ct_huge(ds: Dataset) -> None:
    ds.Rows = 65535
    ds.Columns = 65535


def _ct_truncated_header(work: Path, data: Path) -> Run:
    folder = work / "ct_hostile"
    paths = _copy_ct(data, folder)
    bad = paths[1].rename(paths[1].with_name("bad_truncated.dcm"))
    _truncate(bad, 700)  # preamble and 'DICM' intact, the header cut inside
    return _export_seg_run(work, data, folder, {folder.name, bad.name})


def _ct_not_dicom(work: Path, data: Path) -> Run:
    folder = work / "ct_hostile"
    folder.mkdir()
    for k in range(3):
        (folder / f"{k:02d}.dcm").write_text("this is not a DICOM file\n" * 20)
    return _export_seg_run(work, data, folder, {folder.name})


def _ct_wrong_modality(work: Path, data: Path) -> Run:
    folder = work / "ct_hostile"
    folder.mkdir()
    shutil.copyfile(data / "dicompyler-sample" / "rtdose.dcm", folder / "rtdose.dcm")
    return _export_seg_run(work, data, folder, {folder.name, "rtdose.dcm"})


# ---------------------------------------------------------------- DICOM SEG (segqa load-seg)
def _load_seg_run(work: Path, seg: Path, names: set[str] | None = None) -> Run:
    out = work / "out"
    json_path = out / "result.json"
    return Run("segqa", ["load-seg", str(seg), "--output", str(out / "loaded.seg.nrrd"), "--quiet",
                         "--json", str(json_path)], out, names or {seg.name}, json_path)


def _seg_case(edit: Callable[[Dataset], None]):
    def build(work: Path, data: Path) -> Run:
        _lenient()
        seg = _edit(data / LIVER_SEG, edit, work / "hostile_seg.dcm")
        return _load_seg_run(work, seg)

    return build


def _seg_bytes_case(damage: Callable[[Path], Path]):
    def build(work: Path, data: Path) -> Run:
        seg = work / "hostile_seg.dcm"
        shutil.copyfile(data / LIVER_SEG, seg)
        damage(seg)
        return _load_seg_run(work, seg)

    return build


def _deflated(work: Path, data: Path) -> Path:
    ds = pydicom.dcmread(data / LIVER_SEG)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    seg = work / "hostile_seg.dcm"
    ds.save_as(seg, enforce_file_format=True)
    return seg


def _deflate_damage(damage: Callable[[Path], Path]):
    def build(work: Path, data: Path) -> Run:
        seg = _deflated(work, data)
        meta_end = _meta_end(seg)
        raw = bytearray(seg.read_bytes())
        seg.write_bytes(bytes(damage(raw, meta_end)))
        return _load_seg_run(work, seg)

    return build


def _seg_deflate_bomb(work: Path, data: Path) -> Run:
    """A valid deflated BINARY SEG of three 65535x65535 frames of zeros: 1.6 GB of pixel data in 2 MB of stream,
    every header check passed. Only a memory estimate from the header stops it before the inflate."""
    ds = pydicom.dcmread(data / LIVER_SEG)
    ds.Rows = ds.Columns = 65535
    del ds.PixelData
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(body, ds)
    length = (int(ds.NumberOfFrames) * 65535 * 65535 + 7) // 8
    length += length % 2
    prefix = body.getvalue() + b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", length)
    chunk = 1 << 24
    zeros = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = zeros.compress(bytes(chunk)) + zeros.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, no final bit: repeatable
    head = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    tail = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    seg = work / "hostile_seg.dcm"
    meta = pydicom.filebase.DicomBytesIO()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    pydicom.filewriter.write_file_meta_info(meta, ds.file_meta)
    with open(seg, "wb") as handle:
        handle.write(bytes(128) + b"DICM" + meta.getvalue())
        handle.write(head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH))
        for _ in range(length // chunk):
            handle.write(block)
        handle.write(tail.compress(bytes(length % chunk)) + tail.flush(zlib.Z_FINISH))
    return _load_seg_run(work, seg)


def _label_nifti_header_huge(work: Path, data: Path) -> Run:
    """A gzipped NIfTI whose header claims 1500^3 int32 voxels (13 GB) but holds a few bytes of them."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 1500, 1500, 1500, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 8, 32)  # DT_INT32
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352)
    header[344:348] = b"n+1\0"
    labels = work / "hostile_labels.nii.gz"
    labels.write_bytes(gzip.compress(bytes(header) + bytes(4) + bytes(4096)))
    return _label_export_run(work, data, labels)


def _seg_duplicate_frame_positions(work: Path, data: Path) -> Run:
    """Two frames of the liver segment on one plane: loading would overwrite one and derive a wrong slice step."""
    def edit(ds: Dataset) -> None:
        frames = ds.PerFrameFunctionalGroupsSequence
        frames[1].PlanePositionSequence[0].ImagePositionPatient = list(
            frames[0].PlanePositionSequence[0].ImagePositionPatient)

    return _seg_case(edit)(work, data)


def _seg_other_frame_of_reference(command: str):
    """A SEG on another frame of reference than the CT it is exported on: its contours would land anywhere."""
    def build(work: Path, data: Path) -> Run:
        seg = _edit(data / LIVER_SEG, lambda ds: setattr(ds, "FrameOfReferenceUID", generate_uid()),
                    work / "hostile_seg.dcm")
        out = work / "out"
        output = ["--report", str(out)] if command == "rtstruct-check" else ["--output-dir", str(out)]
        return Run("segqa", [command, "--segmentation", str(seg), "--reference", str(data / CT3), *output, "--quiet"],
                   out, {seg.name})

    return build


def _disk_full(command: str):
    """Outputs that stop growing at 1 KB (RLIMIT_FSIZE: what a full disk does to a write), for each writer."""
    def build(work: Path, data: Path) -> Run:
        out = work / "out"
        labels, reference = data / TOTALSEG / "example_seg_fast_force_split.nii.gz", data / CT3
        if command == "export-seg":
            args = ["export-seg", "--segmentation", str(labels), "--reference",
                    str(data / TOTALSEG / "example_ct_sm.nii.gz"), "--export-reference", "--output-dir", str(out)]
        elif command == "export-rtstruct":
            args = ["export-rtstruct", "--segmentation", str(data / LIVER_SEG), "--reference", str(reference),
                    "--output-dir", str(out)]
        else:
            args = ["load-seg", str(data / LIVER_SEG), "--output", str(out / "liver.seg.nrrd")]
        return Run("segqa", [*args, "--quiet"], out, {"out", "liver.seg.nrrd"}, file_size_limit=1024)

    return build


def _meta_end(path: Path) -> int:
    """Offset just after the file meta group (group 0002), where a deflated dataset's stream starts."""
    raw = path.read_bytes()
    offset = 132
    while raw[offset:offset + 2] == b"\x02\x00":
        vr = raw[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = struct.unpack("<I", raw[offset + 8:offset + 12])[0]
            offset += 12 + length
        else:
            length = struct.unpack("<H", raw[offset + 6:offset + 8])[0]
            offset += 8 + length
    return offset


def _garble_stream(raw: bytearray, start: int) -> bytearray:
    for k in range(start + 40, min(len(raw), start + 240)):
        raw[k] = (raw[k] * 73 + 11) % 256
    return raw


def _cut_stream(raw: bytearray, start: int) -> bytearray:
    return raw[:start + (len(raw) - start) // 3]


def _first_frame(ds: Dataset) -> Dataset:
    return ds.PerFrameFunctionalGroupsSequence[0]


def _seg_frame_position_nan(ds: Dataset) -> None:
    _set_raw(_first_frame(ds).PlanePositionSequence[0], "ImagePositionPatient", "nan\\nan\\nan")


def _seg_segment_number(ds: Dataset) -> None:
    _first_frame(ds).SegmentIdentificationSequence[0].ReferencedSegmentNumber = 99


def _seg_shared_spacing(text: str):
    return lambda ds: _set_raw(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0], "PixelSpacing", text)


def _seg_shared_orientation(text: str):
    return lambda ds: _set_raw(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0],
                               "ImageOrientationPatient", text)


def _delete(keyword: str):
    return lambda ds: delattr(ds, keyword)


def _assign(keyword: str, value):
    return lambda ds: setattr(ds, keyword, value)


def _seg_huge(ds: Dataset) -> None:
    ds.Rows = 65535
    ds.Columns = 65535


# ---------------------------------------------------------------- label volumes (segqa export-seg)
def _label_base(data: Path):
    """A small crop of the TotalSegmentator labels, as (labels[k, j, i] int32, spacing, origin) in LPS."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(data / TOTALSEG / "example_seg.nii.gz"))
    labels = sitk.GetArrayFromImage(image)[10:15, 30:70, 40:80].astype(np.int32)
    return labels, image.GetSpacing(), image.TransformIndexToPhysicalPoint((40, 30, 10))


def _reference_volume(work: Path, data: Path) -> Path:
    """A CT-like reference on the label crop's grid (values from the real CT), as a small .nrrd."""
    import SimpleITK as sitk

    labels, spacing, origin = _label_base(data)
    ct = sitk.ReadImage(str(data / TOTALSEG / "example_ct.nii.gz"))
    grid = sitk.Image(labels.shape[2], labels.shape[1], labels.shape[0], sitk.sitkInt16)
    grid.SetSpacing(spacing)
    grid.SetOrigin(origin)
    reference = sitk.Resample(ct, grid, sitk.Transform(), sitk.sitkNearestNeighbor, -1000, sitk.sitkInt16)
    path = work / "reference_ct.nrrd"
    sitk.WriteImage(reference, str(path))
    return path


def _label_export_run(work: Path, data: Path, segmentation: Path) -> Run:
    return _export_seg_run(work, data, _reference_volume(work, data), {segmentation.name}, segmentation,
                           ["--export-reference"])


def _nifti(array: np.ndarray, spacing, origin, path: Path) -> Path:
    import nibabel as nib

    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS origin -> RAS affine
    affine[:3, 3] = [-origin[0], -origin[1], origin[2]]
    image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0) if array.ndim == 3 else array), affine)
    nib.save(image, str(path))
    return path


def _label_nifti_case(make: Callable[[np.ndarray], np.ndarray]):
    def build(work: Path, data: Path) -> Run:
        labels, spacing, origin = _label_base(data)
        path = _nifti(make(labels), spacing, origin, work / "hostile_labels.nii.gz")
        return _label_export_run(work, data, path)

    return build


def _with_value(value, dtype):
    def make(labels):
        out = labels.astype(dtype)
        out[2, 20, 20] = value
        return out

    return make


def _label_nifti_zero_spacing(work: Path, data: Path) -> Run:
    """pixdim 0 and no qform/sform: the header gives no geometry (ITK silently substitutes 1 mm)."""
    labels, spacing, origin = _label_base(data)
    path = _nifti(labels.astype(np.uint8), spacing, origin, work / "hostile_labels.nii")
    raw = bytearray(path.read_bytes())
    raw[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)
    raw[252:256] = struct.pack("<2h", 0, 0)
    path.write_bytes(bytes(raw))
    return _label_export_run(work, data, path)


def _four_d(labels):
    return np.stack([labels, labels], axis=-1).transpose(2, 1, 0, 3)


def _nrrd_header(sizes, spacing, origin, dtype="uint8", encoding="raw", extra: dict | None = None) -> bytes:
    lines = ["NRRD0004", f"type: {dtype}", "dimension: 3", "space: left-posterior-superior",
             f"sizes: {' '.join(str(s) for s in sizes)}",
             f"space directions: ({spacing[0]},0,0) (0,{spacing[1]},0) (0,0,{spacing[2]})",
             "kinds: domain domain domain", "endian: little", f"encoding: {encoding}",
             f"space origin: ({origin[0]},{origin[1]},{origin[2]})"]
    lines += [f"{k}:={v}" for k, v in (extra or {}).items()]
    return ("\n".join(lines) + "\n\n").encode()


def _segment_fields(extent="0 39 0 39 0 4", label=2, layer="0") -> dict:
    return {"Segment0_ID": "Segment_1", "Segment0_Name": "liver", "Segment0_Color": "0.9 0.5 0.4",
            "Segment0_LabelValue": str(label), "Segment0_Layer": layer, "Segment0_Extent": extent,
            "Segment0_Tags": "", "Segmentation_MasterRepresentation": "Binary labelmap",
            "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
            "Segmentation_ReferenceImageExtentOffset": "0 0 0"}


def _nrrd_case(name: str, sizes=(40, 40, 5), spacing=(3.0, 3.0, 3.0), dtype="uint8", encoding="raw",
               body: Callable[[np.ndarray], bytes] | None = None, segment: dict | None = None,
               values: Callable[[np.ndarray], np.ndarray] | None = None):
    def build(work: Path, data: Path) -> Run:
        labels, _, origin = _label_base(data)
        array = values(labels) if values else labels.astype(np.uint8)
        payload = body(array) if body else array.tobytes()
        if encoding == "gzip" and body is None:
            payload = gzip.compress(payload)
        path = work / name
        path.write_bytes(_nrrd_header(sizes, spacing, origin, dtype, encoding, segment) + payload)
        reference = _reference_volume(work, data)
        return _export_seg_run(work, data, reference, {path.name}, path, ["--export-reference"])

    return build


def _garbage_gzip(array: np.ndarray) -> bytes:
    good = gzip.compress(array.tobytes())
    return good[:10] + bytes((b * 29 + 3) % 256 for b in good[10:])


# ---------------------------------------------------------------- RTSTRUCT (segqa load-rtstruct)
def _rtstruct(data: Path, path: Path, contour_edit: Callable[[list[Dataset]], None] | None = None,
              empty: bool = False) -> Path:
    """A small RTSTRUCT on the 3-slice CT: one ROI, one square contour per slice."""
    slices = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((data / CT3).glob("*.dcm"))]
    first = slices[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.Modality = "RTSTRUCT"
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyID"):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "hostile"
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    images = []
    for s in slices:
        item = Dataset()
        item.ReferencedSOPClassUID = s.SOPClassUID
        item.ReferencedSOPInstanceUID = s.SOPInstanceUID
        images.append(item)
    series.ContourImageSequence = Sequence(images)
    study.RTReferencedSeriesSequence = Sequence([series])
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
    roi.ROIName = "square"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contours = []
    for s in slices:
        x0, y0, z = (float(v) for v in s.ImagePositionPatient)
        x, y = x0 + 150, y0 + 150
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        points = [x, y, z, x + 60, y, z, x + 60, y + 60, z, x, y + 60, z]
        contour.NumberOfContourPoints = 4
        contour.ContourData = [f"{v:.4f}" for v in points]
        image = Dataset()
        image.ReferencedSOPClassUID = s.SOPClassUID
        image.ReferencedSOPInstanceUID = s.SOPInstanceUID
        contour.ContourImageSequence = Sequence([image])
        contours.append(contour)
    if contour_edit:
        contour_edit(contours)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    if not empty:
        roi_contour.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([roi_contour])
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "ORGAN"
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Sequence([observation])
    return _save(ds, path, new_file=True)


def _rt_run(work: Path, data: Path, rtstruct: Path) -> Run:
    out = work / "out"
    json_path = out / "result.json"
    return Run("segqa", ["load-rtstruct", str(rtstruct), "--reference", str(data / CT3),
                         "--output", str(out / "loaded.seg.nrrd"), "--quiet", "--json", str(json_path)],
               out, {rtstruct.name}, json_path)


def _rt_case(contour_edit=None, empty=False, damage: Callable[[Path], Path] | None = None):
    def build(work: Path, data: Path) -> Run:
        _lenient()
        path = _rtstruct(data, work / "hostile_rs.dcm", contour_edit, empty)
        if damage:
            damage(path)
        run = _rt_run(work, data, path)
        if empty:  # ContourSequence is type 3: an ROI without contours is legal, loaded as an empty segment
            run.expected_exit = 0
        return run

    return build


def _compare_rt_case(contour_edit=None, damage: Callable[[Path], Path] | None = None):
    """`segqa compare` of the liver SEG with a hostile RTSTRUCT as the second model."""
    def build(work: Path, data: Path) -> Run:
        _lenient()
        path = _rtstruct(data, work / "hostile_rs.dcm", contour_edit)
        if damage:
            damage(path)
        out, json_path = work / "review", work / "result.json"
        return Run("segqa", ["compare", "--reference", str(data / CT3), "--segmentation", str(data / LIVER_SEG),
                             "--segmentation", str(path), "--output-dir", str(out), "--quiet", "--json",
                             str(json_path)], out, {path.name}, json_path)

    return build


def _contour_text(text: str, which: int = 1):
    def edit(contours):
        _set_raw(contours[which], "ContourData", text)

    return edit


def _contour_not_triples(contours):
    contours[1].ContourData = [f"{v:.4f}" for v in list(contours[1].ContourData)[:-1]]


# ---------------------------------------------------------------- RTDOSE (dosealign resample)
def _dose_reference(work: Path) -> tuple[Path, str]:
    from data_builders import synthetic_dose as synthetic
    from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom

    folder = work / "ct"
    folder.mkdir()
    uid = "1.2.826.0.1.3680043.8.498.1"
    ct = VolumeGeometry((8, 20, 22), affine_from_dicom([-30.0, -28.0, -18.0], [1, 0, 0, 0, 1, 0], [2.8, 2.6], 3.0))
    synthetic.write_ct_series(folder, ct, uid)
    return folder, uid


def _dose_file(work: Path, uid: str, **kwargs) -> Path:
    from data_builders import synthetic_dose as synthetic

    options = dict(field=synthetic.linear_field((0.02, 0.01, -0.03), 10.0), image_position=[-20.0, -20.0, -12.0],
                   image_orientation=[1, 0, 0, 0, 1, 0], pixel_spacing=[3.0, 3.0], rows=12, columns=14,
                   frame_offsets=np.arange(6) * 3.0, frame_of_reference_uid=uid)
    options.update(kwargs)
    return synthetic.write_rtdose(work / "hostile_dose.dcm", **options)


def _dose_run(work: Path, dose: Path, reference: Path, extra: list[str] | None = None,
              names: set[str] | None = None) -> Run:
    out = work / "out"
    json_path = out / "result.json"
    return Run("dosealign", ["resample", "--quiet", "--dose", str(dose), "--reference", str(reference),
                             "--output", str(out / "dose.nrrd"), "--json", str(json_path), *(extra or [])],
               out, names or {dose.name}, json_path)


def _dose_case(edit: Callable[[Dataset], None] | None = None, damage: Callable[[Path], Path] | None = None):
    def build(work: Path, data: Path) -> Run:
        _lenient()
        reference, uid = _dose_reference(work)
        dose = _dose_file(work, uid)
        if edit:
            _edit(dose, edit)
        if damage:
            damage(dose)
        return _dose_run(work, dose, reference)

    return build


def _registration_case(text: str):
    def build(work: Path, data: Path) -> Run:
        reference, uid = _dose_reference(work)
        dose = _dose_file(work, uid)
        matrix = work / "hostile_matrix.txt"
        matrix.write_text(text)
        return _dose_run(work, dose, reference, ["--registration", str(matrix)], {matrix.name})

    return build


def _dose_other_input(make: Callable[[Path, Path, str], tuple[Path, list[str], set[str]]]):
    """A run whose dose, reference or options ``make(work, data, uid)`` replaces: (dose, extra args, blamed names)."""

    def build(work: Path, data: Path) -> Run:
        reference, uid = _dose_reference(work)
        dose, extra, names = make(work, data, uid)
        return _dose_run(work, dose, reference, extra, names)

    return build


def _dose_not_dicom(work: Path, data: Path, uid: str):
    dose = work / "hostile_dose.dcm"
    dose.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 50)
    return dose, [], {dose.name}


def _dose_is_ct(work: Path, data: Path, uid: str):
    dose = Path(shutil.copyfile(sorted((data / CT3).glob("*.dcm"))[0], work / "ct_slice.dcm"))
    return dose, [], {dose.name}


def _dose_other_frame(work: Path, data: Path, uid: str):
    dose = _dose_file(work, generate_uid())
    return dose, [], {dose.name}


def _registration_three_rows(work: Path, data: Path, uid: str):
    matrix = work / "hostile_matrix.txt"
    matrix.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    return _dose_file(work, uid), ["--registration", str(matrix)], {matrix.name}


def _dose_labelmap_nan(work: Path, data: Path, uid: str):
    import SimpleITK as sitk

    labels = sitk.GetImageFromArray(np.full((8, 20, 22), np.nan, np.float32))
    path = work / "hostile_labels.nrrd"
    sitk.WriteImage(labels, str(path))
    return _dose_file(work, uid), ["--labelmap", str(path)], {path.name}


def _rtstruct_check_run(edit_slice: Callable[[Dataset], None]):
    """rtstruct-check of a good label map against a CT whose slices ``edit_slice`` breaks."""

    def build(work: Path, data: Path) -> Run:
        _lenient()
        run = _ct_case(edit_slice, (0, 1, 2))(work, data)
        out = work / "out"
        args = run.args
        args[0] = "rtstruct-check"
        args[args.index("--output-dir")] = "--report"
        return Run("segqa", args, out, run.names, run.json_path)

    return build


# ---------------------------------------------------------------- outputs that cannot be written
def _json_is_folder(work: Path, data: Path) -> Run:
    run = _export_seg_run(work, data, data / CT3, {"result_dir"})
    folder = work / "result_dir"
    folder.mkdir()
    run.args[run.args.index("--json") + 1] = str(folder)
    run.json_path = None
    return run


def _output_under_file(work: Path, data: Path) -> Run:
    blocker = work / "blocker_file"
    blocker.write_text("a file where a folder should be\n")
    out = blocker / "sub"
    return Run("segqa", ["export-seg", "--segmentation", str(data / LIVER_LABEL), "--reference", str(data / CT3),
                         "--output-dir", str(out), "--quiet"], out, {"blocker_file", "sub"})


def _load_output_under_file(work: Path, data: Path) -> Run:
    blocker = work / "blocker_file"
    blocker.write_text("a file where a folder should be\n")
    out = blocker / "sub"
    return Run("segqa", ["load-seg", str(data / LIVER_SEG), "--output", str(out / "x.seg.nrrd"), "--quiet"],
               out, {"blocker_file", "sub", "x.seg.nrrd"})


def _dose_output_under_file(work: Path, data: Path) -> Run:
    reference, uid = _dose_reference(work)
    dose = _dose_file(work, uid)
    blocker = work / "blocker_file"
    blocker.write_text("a file where a folder should be\n")
    out = blocker / "sub"
    return Run("dosealign", ["resample", "--quiet", "--dose", str(dose), "--reference", str(reference),
                             "--output", str(out / "dose.nrrd")], out, {"blocker_file", "sub", "dose.nrrd"})


def _json_under_file(work: Path, data: Path) -> Run:
    run = _export_seg_run(work, data, data / CT3, {"blocker_file", "result.json"})
    blocker = work / "blocker_file"
    blocker.write_text("a file where a folder should be\n")
    run.args[run.args.index("--json") + 1] = str(blocker / "result.json")
    run.json_path = None
    return run


def _load_output_unknown_type(work: Path, data: Path) -> Run:
    out = work / "out"
    return Run("segqa", ["load-seg", str(data / LIVER_SEG), "--output", str(out / "loaded.txt"), "--quiet"],
               out, {"loaded.txt"})


def _report_under_file(work: Path, data: Path) -> Run:
    blocker = work / "blocker_file"
    blocker.write_text("a file where a folder should be\n")
    reference, uid = _dose_reference(work)
    dose = _dose_file(work, uid)
    out = work / "out"
    return Run("dosealign", ["resample", "--quiet", "--dose", str(dose), "--reference", str(reference),
                             "--output", str(out / "dose.nrrd"), "--report", str(blocker / "report")], out,
               {"blocker_file", "report"})


NAN6 = "nan\\0\\0\\0\\1\\0"
CASES: dict[str, Callable[[Path, Path], Run]] = {
    # CT reference series
    "ct-two-frames-of-reference": _ct_two_frames_of_reference,
    "ct-orientation-zero": _ct_all(_orientation("0\\0\\0\\0\\0\\0")),
    "ct-orientation-nan": _ct_all(_orientation(NAN6)),
    "ct-orientation-not-orthogonal": _ct_all(_orientation("1\\0\\0\\0.5\\0.8660254\\0")),
    "ct-orientation-not-unit": _ct_all(_orientation("2\\0\\0\\0\\2\\0")),
    "ct-orientation-five-values": _ct_all(_orientation("1\\0\\0\\0\\1")),
    "ct-spacing-zero": _ct_all(lambda ds: _set_raw(ds, "PixelSpacing", "0\\0")),
    "ct-spacing-negative": _ct_all(lambda ds: _set_raw(ds, "PixelSpacing", "-0.8\\-0.8")),
    "ct-spacing-nan": _ct_all(lambda ds: _set_raw(ds, "PixelSpacing", "nan\\nan")),
    "ct-missing-position-one-slice": _ct_case(_ct_missing_ipp),
    "ct-position-nan-one-slice": _ct_case(lambda ds: _set_raw(ds, "ImagePositionPatient", "nan\\0\\0")),
    "ct-position-inf-one-slice": _ct_case(lambda ds: _set_raw(ds, "ImagePositionPatient", "inf\\0\\-126")),
    "ct-duplicate-positions": _ct_duplicate_position,
    "ct-rows-columns-65535": _ct_all(_ct_huge),
    "ct-rows-65535-one-slice": _ct_case(_ct_huge),
    "ct-rows-zero": _ct_all(lambda ds: setattr(ds, "Rows", 0)),
    "ct-truncated-header": _ct_truncated_header,
    "ct-not-dicom": _ct_not_dicom,
    "ct-wrong-modality": _ct_wrong_modality,
    # DICOM SEG
    "seg-corrupt-header": _seg_bytes_case(_corrupt_header),
    "seg-truncated-header": _seg_bytes_case(lambda p: _truncate(p, 900)),
    "seg-truncated-pixels": _seg_bytes_case(lambda p: _truncate(p, 0.6)),
    "seg-not-dicom": _seg_bytes_case(lambda p: p.write_text("not a DICOM file at all\n" * 30) and p),
    "seg-wrong-modality": lambda work, data: _load_seg_run(
        work, Path(shutil.copyfile(sorted((data / CT3).glob("*.dcm"))[0], work / "ct_slice.dcm"))),
    "seg-frames-zero": _seg_case(_assign("NumberOfFrames", 0)),
    "seg-frames-too-few": _seg_case(_assign("NumberOfFrames", 1)),
    "seg-frames-huge": _seg_case(_assign("NumberOfFrames", 2_000_000_000)),
    "seg-rows-zero": _seg_case(_assign("Rows", 0)),
    "seg-rows-columns-65535": _seg_case(_seg_huge),
    "seg-no-segment-sequence": _seg_case(_delete("SegmentSequence")),
    "seg-empty-segment-sequence": _seg_case(_assign("SegmentSequence", Sequence([]))),
    "seg-no-per-frame-groups": _seg_case(_delete("PerFrameFunctionalGroupsSequence")),
    "seg-no-shared-groups": _seg_case(_delete("SharedFunctionalGroupsSequence")),
    "seg-bogus-segmentation-type": _seg_case(_assign("SegmentationType", "BANANA")),
    "seg-bits-allocated-7": _seg_case(_assign("BitsAllocated", 7)),
    "seg-frame-position-nan": _seg_case(_seg_frame_position_nan),
    "seg-segment-number-99": _seg_case(_seg_segment_number),
    "seg-spacing-zero": _seg_case(_seg_shared_spacing("0\\0")),
    "seg-orientation-zero": _seg_case(_seg_shared_orientation("0\\0\\0\\0\\0\\0")),
    "seg-deflate-corrupt": _deflate_damage(_garble_stream),
    "seg-deflate-truncated": _deflate_damage(_cut_stream),
    "seg-deflate-bomb": _seg_deflate_bomb,
    "seg-duplicate-frame-positions": _seg_duplicate_frame_positions,
    "export-rtstruct-seg-other-frame-of-reference": _seg_other_frame_of_reference("export-rtstruct"),
    "rtstruct-check-seg-other-frame-of-reference": _seg_other_frame_of_reference("rtstruct-check"),
    "export-seg-seg-other-frame-of-reference": _seg_other_frame_of_reference("export-seg"),
    # label volumes
    "label-nifti-value-70000": _label_nifti_case(_with_value(70000, np.int32)),
    "label-nifti-nan": _label_nifti_case(_with_value(np.nan, np.float32)),
    "label-nifti-inf": _label_nifti_case(_with_value(np.inf, np.float32)),
    "label-nifti-negative": _label_nifti_case(_with_value(-3, np.int16)),
    "label-nifti-fractional": _label_nifti_case(_with_value(1.5, np.float32)),
    "label-nifti-4d": _label_nifti_case(_four_d),
    "label-nifti-zero-spacing": _label_nifti_zero_spacing,
    "label-nifti-header-1500-cubed": _label_nifti_header_huge,
    "label-nrrd-value-70000": _nrrd_case("hostile_labels.nrrd", dtype="int32",
                                         values=_with_value(70000, np.int32)),
    "label-nrrd-nan": _nrrd_case("hostile_labels.nrrd", dtype="float", values=_with_value(np.nan, np.float32)),
    "label-nrrd-corrupt-gzip": _nrrd_case("hostile_labels.nrrd", encoding="gzip", body=_garbage_gzip),
    "label-nrrd-lying-sizes": _nrrd_case("hostile_labels.nrrd", sizes=(400, 400, 50)),
    "label-nrrd-zero-spacing": _nrrd_case("hostile_labels.nrrd", spacing=(0, 0, 0)),
    "label-nrrd-header-1500-cubed": _nrrd_case("hostile_labels.nrrd", sizes=(1500, 1500, 1500), encoding="gzip"),
    "segnrrd-corrupt-gzip": _nrrd_case("hostile.seg.nrrd", encoding="gzip", body=_garbage_gzip,
                                       segment=_segment_fields()),
    "segnrrd-lying-sizes": _nrrd_case("hostile.seg.nrrd", sizes=(400, 400, 50), segment=_segment_fields()),
    "segnrrd-zero-spacing": _nrrd_case("hostile.seg.nrrd", spacing=(0, 0, 0), segment=_segment_fields()),
    "segnrrd-extent-out-of-range": _nrrd_case("hostile.seg.nrrd", segment=_segment_fields("0 9999 0 9999 0 9999")),
    "segnrrd-extent-not-numbers": _nrrd_case("hostile.seg.nrrd", segment=_segment_fields("a b c d e f")),
    "segnrrd-layer-out-of-range": _nrrd_case("hostile.seg.nrrd", segment=_segment_fields(layer="7")),
    "segnrrd-label-not-a-number": _nrrd_case("hostile.seg.nrrd", segment=_segment_fields(label="abc")),
    "segnrrd-header-1500-cubed": _nrrd_case("hostile.seg.nrrd", sizes=(1500, 1500, 1500), encoding="gzip",
                                            segment=_segment_fields()),
    # RTSTRUCT
    "rtstruct-nan-coordinates": _rt_case(_contour_text("nan\\nan\\nan\\1\\2\\3\\4\\5\\6")),
    "rtstruct-inf-coordinates": _rt_case(_contour_text("inf\\0\\-126\\1\\2\\-126\\4\\5\\-126")),
    "rtstruct-not-triples": _rt_case(_contour_not_triples),
    "rtstruct-truncated": _rt_case(damage=lambda p: _truncate(p, 0.5)),
    "rtstruct-empty-roi": _rt_case(empty=True),
    "rtstruct-not-dicom": _rt_case(damage=lambda p: p.write_text("no DICOM here\n" * 40) and p),
    "compare-rtstruct-nan-coordinates": _compare_rt_case(_contour_text("nan\\nan\\nan\\1\\2\\3\\4\\5\\6")),
    "compare-rtstruct-truncated": _compare_rt_case(damage=lambda p: _truncate(p, 0.5)),
    "compare-rtstruct-not-triples": _compare_rt_case(_contour_not_triples),
    "rtstruct-wrong-modality": lambda work, data: _rt_run(
        work, data, Path(shutil.copyfile(sorted((data / CT3).glob("*.dcm"))[0], work / "ct_slice.dcm"))),
    # RTDOSE
    "dose-scaling-nan": _dose_case(lambda ds: _set_raw(ds, "DoseGridScaling", "nan")),
    "dose-scaling-negative": _dose_case(lambda ds: _set_raw(ds, "DoseGridScaling", "-1")),
    "dose-rows-columns-65535": _dose_case(_ct_huge),
    "dose-frames-huge": _dose_case(_assign("NumberOfFrames", 2_000_000_000)),
    "dose-spacing-zero": _dose_case(lambda ds: _set_raw(ds, "PixelSpacing", "0\\0")),
    "dose-orientation-zero": _dose_case(_orientation("0\\0\\0\\0\\0\\0")),
    "dose-orientation-not-orthogonal": _dose_case(_orientation("1\\0\\0\\0.5\\0.8660254\\0")),
    "dose-position-nan": _dose_case(lambda ds: _set_raw(ds, "ImagePositionPatient", "nan\\0\\0")),
    "dose-offsets-nan": _dose_case(lambda ds: _set_raw(ds, "GridFrameOffsetVector", "0\\nan\\6\\9\\12\\15")),
    "dose-offsets-too-few": _dose_case(lambda ds: _set_raw(ds, "GridFrameOffsetVector", "0\\3\\6")),
    "dose-offsets-duplicate": _dose_case(lambda ds: _set_raw(ds, "GridFrameOffsetVector", "0\\3\\3\\9\\12\\15")),
    "dose-truncated-pixels": _dose_case(damage=lambda p: _truncate(p, 0.7)),
    "dose-not-dicom": _dose_other_input(_dose_not_dicom),
    "dose-is-a-ct-slice": _dose_other_input(_dose_is_ct),
    "dose-other-frame-of-reference": _dose_other_input(_dose_other_frame),
    "dose-labelmap-nan": _dose_other_input(_dose_labelmap_nan),
    "registration-three-rows": _dose_other_input(_registration_three_rows),
    "rtstruct-check-ct-spacing-zero": _rtstruct_check_run(lambda ds: _set_raw(ds, "PixelSpacing", "0\\0")),
    "rtstruct-check-ct-orientation-skewed": _rtstruct_check_run(_orientation("1\\0\\0\\0.5\\0.8660254\\0")),
    "registration-nan": _registration_case("1 0 0 nan\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
    "registration-singular": _registration_case("0 0 0 0\n0 0 0 0\n0 0 0 0\n0 0 0 1\n"),
    # outputs
    "json-is-a-folder": _json_is_folder,
    "json-under-a-file": _json_under_file,
    "export-output-under-a-file": _output_under_file,
    "load-output-under-a-file": _load_output_under_file,
    "load-output-unknown-type": _load_output_unknown_type,
    "dose-output-under-a-file": _dose_output_under_file,
    "dose-report-under-a-file": _report_under_file,
    "disk-full-export-seg": _disk_full("export-seg"),
    "disk-full-export-rtstruct": _disk_full("export-rtstruct"),
    "disk-full-load-seg": _disk_full("load-seg"),
}
