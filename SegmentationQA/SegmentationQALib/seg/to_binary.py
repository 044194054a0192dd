"""LABELMAP SEG -> BINARY SEG, for a peer that does not accept the LABELMAP Segmentation Storage SOP class.

Lossless by construction: our reader (``load_seg``) gives the segments (voxels, names, colours, coded terms,
algorithm), our writer (``write_seg``) writes them as BINARY on the same reference images; the placement on the
reference grid must change no voxel, else it is refused.

UID scheme: a new SOPInstanceUID and a new SeriesInstanceUID (a SEG of another SOP class is another object and
another series); StudyInstanceUID, patient, FrameOfReferenceUID and the referenced series and instances are those of
the reference CT, as in the LABELMAP SEG (the writer copies them from the reference series); SeriesDescription,
SeriesNumber, ContentLabel, ContentDescription and ContentCreatorName are kept. The writer needs the reference
series' headers: they are found among the files being sent or in the folders given (``--reference``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

from DicomFidelityCommonLib.dicom.series import ImageSeries, is_dicom_file, list_dicom_files, read_image_series
from DicomFidelityCommonLib.errors import DicomFidelityError, GeometryError, WrongModalityError
from SegmentationQALib.seg.options import Compression, SegExportOptions, SegExportResult, SegType
from SegmentationQALib.seg.read import load_seg
from SegmentationQALib.seg.write import write_seg

if TYPE_CHECKING:
    from DicomFidelityCommonLib.pacs import SendResult


def referenced_series_uid(header: pydicom.Dataset, path: str | Path) -> str:
    sequence = header.get("ReferencedSeriesSequence") or []
    if not sequence or not sequence[0].get("SeriesInstanceUID"):
        raise DicomFidelityError("the SEG names no referenced series (ReferencedSeriesSequence)", path,
                                 "ReferencedSeriesSequence")
    return str(sequence[0].SeriesInstanceUID)


def labelmap_to_binary(seg_path: str | Path, reference: ImageSeries, output_path: str | Path,
                       compression: Compression | None = None,
                       header: pydicom.Dataset | None = None) -> SegExportResult:
    """Write the LABELMAP SEG at ``seg_path`` as a BINARY SEG at ``output_path``, by default deflated when the
    LABELMAP was (1-bit frames of many segments are large: 0.11 MB deflated LABELMAP -> 4.2 MB plain BINARY for 61
    TotalSegmentator labels) and uncompressed otherwise; the sender transcodes when the peer refuses deflate.
    ``header``: the SEG's header when the caller has read it already."""
    header = header if header is not None else pydicom.dcmread(seg_path, stop_before_pixels=True)
    if compression is None:
        deflated = header.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
        compression = Compression.DEFLATE if deflated else Compression.NONE
    loaded = load_seg(seg_path)
    if loaded.seg_type != "LABELMAP":
        raise WrongModalityError(f"not a LABELMAP SEG ({loaded.seg_type})", seg_path, "SegmentationType")
    layered, changed = loaded.layered.resampled_to(reference.geometry)
    if changed:
        raise GeometryError(f"{changed} voxels would change placing the segments on the reference series grid",
                            seg_path)
    options = SegExportOptions(
        seg_type=SegType.BINARY,
        compression=compression,
        series_description=str(header.get("SeriesDescription", "") or "Segmentation"),
        series_number=int(header.get("SeriesNumber") or 300),
        content_label=str(header.get("ContentLabel", "") or "SEGMENTATION"),
        content_description=str(header.get("ContentDescription", "")) or None,
        content_creator_name=str(header.get("ContentCreatorName", "") or "DicomFidelity^"),
        expected_frame_of_reference_uid=loaded.frame_of_reference_uid,
    )
    with warnings.catch_warnings(record=True) as caught:  # highdicom's (e.g. a one-component patient name)
        warnings.simplefilter("always")
        result = write_seg(layered, reference, output_path, options)
    result.warnings = loaded.warnings + result.warnings + [str(w.message).split(". ")[0] for w in caught]
    return result


class LabelmapToBinaryConverter:
    """The ``LabelmapConverter`` SegmentationQA gives the shared sender: finds the reference series a LABELMAP SEG
    names among ``candidates`` (the files being sent and any reference folders) and converts into the work folder."""

    def __init__(self, candidates: Iterable[str | Path] = ()):
        self.sources = list(candidates)  # searched on the first conversion only: most sends convert nothing
        self._candidates: list[Path] | None = None
        self.results: dict[str, SegExportResult] = {}  # source SEG path -> what was written

    @property
    def candidates(self) -> list[Path]:
        """The DICOM files among the sources (folders searched recursively)."""
        if self._candidates is None:
            self._candidates = []
            for source in self.sources:
                path = Path(source)
                if path.is_dir():
                    self._candidates.extend(p for p in list_dicom_files(path) if is_dicom_file(p))
                else:
                    self._candidates.append(path)
        return self._candidates

    def find_reference(self, seg_path: Path, series_uid: str) -> ImageSeries:
        files = []
        for path in self.candidates:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            except Exception:  # not ours to judge here: the sender reports unreadable files itself
                continue
            if str(ds.get("SeriesInstanceUID", "")) == series_uid:
                files.append(path)
        if not files:
            raise DicomFidelityError(f"its referenced series {series_uid} is not among the files sent; give its "
                                     "folder with --reference to convert it to BINARY", seg_path)
        return read_image_series(files, series_instance_uid=series_uid)

    def __call__(self, seg_path: Path, workdir: Path) -> Path:
        seg_path = Path(seg_path)
        header = pydicom.dcmread(seg_path, stop_before_pixels=True)
        reference = self.find_reference(seg_path, referenced_series_uid(header, seg_path))
        output = Path(workdir) / f"{seg_path.stem}.binary.dcm"
        self.results[str(seg_path)] = labelmap_to_binary(seg_path, reference, output, header=header)
        return output


def send_with_binary_fallback(paths: Iterable[str | Path], destination: str, references: Iterable[str | Path] = (),
                              progress=None, **send_options) -> SendResult:
    """Send ``paths`` (DicomFidelityCommonLib.pacs.send_files); a LABELMAP SEG the peer refuses goes as BINARY, its
    reference series taken from the files sent or ``references``; what the conversion warned about is in the
    result's warnings. What `segqa send`, `export-seg --send` and the panel's Send all call."""
    from DicomFidelityCommonLib.pacs import send_files

    paths = [Path(p) for p in paths]
    converter = LabelmapToBinaryConverter([*paths, *references])
    result = send_files(paths, destination, converter=converter, progress=progress, **send_options)
    for source, written in converter.results.items():
        result.warnings.extend(f"{source}: {warning}" for warning in written.warnings)
    return result
