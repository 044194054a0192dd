"""One entry point per direction: a spec (file or built-in map name) in, a description out to the formats users have.

Format detection looks at the content when the extension is ambiguous (``.txt`` is both a Slicer text colour table
and a common ITK-SNAP name; ``.json`` is dcmqi's or ours), so users do not have to say what they are giving us.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

from DicomFidelityCommonLib.errors import InvalidInputFileError
from SegmentationQALib.labels import dcmqi_json, itksnap, model_maps, nifti_table, slicer_ctbl
from SegmentationQALib.labels.description import (
    JSON_FORMAT_NAME,
    LabelDescription,
    apply_label_description,
    description_from_segmentation,
    write_text_atomically,
)
from SegmentationQALib.segmentation import LayeredSegmentation


class LabelFormat(str, enum.Enum):
    """File formats a label description is read from / written to."""

    DCMQI_JSON = "dcmqi-json"  # dcmqi segmentation metadata (itkimage2segimage --inputMetadata)
    SLICER_CSV = "slicer-csv"  # Slicer CSV colour table with terminology columns (.csv / .labels.csv)
    SLICER_CTBL = "slicer-ctbl"  # Slicer text colour table (.ctbl / .txt), names and colours only
    ITKSNAP = "itksnap"  # ITK-SNAP label description file
    NIFTI_TABLE = "nifti-table"  # label table embedded in a NIfTI header extension (read only)
    OURS_JSON = "dicomfidelity-json"  # LabelDescription.to_json()


SNIFF_CHARS = 1 << 16

# file name endings for each written format, used when writing beside a label volume
SUFFIXES = {
    LabelFormat.DCMQI_JSON: ".dcmqi.json",
    LabelFormat.SLICER_CSV: ".labels.csv",
    LabelFormat.SLICER_CTBL: ".ctbl",
    LabelFormat.ITKSNAP: ".itksnap.txt",
    LabelFormat.OURS_JSON: ".labels.json",
}


def detect_label_format(path: str | Path) -> LabelFormat:
    """By extension where it is unambiguous, else by content; an error naming the file when nothing fits."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputFileError("label description file not found", path)
    if nifti_table.is_nifti_path(path):
        return LabelFormat.NIFTI_TABLE
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            text = stream.read(SNIFF_CHARS)  # enough to recognise a format; a mistaken 1 GB volume is not read
            if suffix == ".json" or text.lstrip().startswith("{"):
                text += stream.read()
    except OSError as error:
        raise InvalidInputFileError(f"cannot read ({error})", path) from None
    if suffix == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidInputFileError(f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
                                        path) from None
        if dcmqi_json.looks_like_dcmqi(data):
            return LabelFormat.DCMQI_JSON
        if isinstance(data, dict) and data.get("format") == JSON_FORMAT_NAME:
            return LabelFormat.OURS_JSON
        raise InvalidInputFileError("JSON is neither dcmqi segmentation metadata (no 'segmentAttributes') nor a "
                                    "label description written by this tool", path)
    if suffix in (".csv", ".tsv") or slicer_ctbl.is_slicer_csv_text(text):
        return LabelFormat.SLICER_CSV
    if itksnap.is_itksnap_text(text):
        return LabelFormat.ITKSNAP
    if suffix == ".ctbl" or slicer_ctbl.is_ctbl_text(text):
        return LabelFormat.SLICER_CTBL
    raise InvalidInputFileError("unknown label description format (expected dcmqi JSON, a Slicer colour table "
                                "(.csv/.ctbl), an ITK-SNAP label file, or a NIfTI with a label table)", path)


def read_label_description(spec: str | Path) -> LabelDescription:
    """A file path (format detected) or a built-in map name such as ``totalsegmentator:total`` or
    ``moose:clin_ct_organs``. An existing file wins over a built-in name of the same spelling. A label NIfTI with an
    embedded table (TotalSegmentator output) describes itself, with the model's codes when it is a known class map."""
    text = str(spec)
    path = Path(text).expanduser()
    if not path.exists() and model_maps.is_model_map_name(text):
        return model_maps.load_model_map(text)
    fmt = detect_label_format(path)
    if fmt is LabelFormat.DCMQI_JSON:
        return dcmqi_json.read_dcmqi_json(path)
    if fmt is LabelFormat.OURS_JSON:
        return LabelDescription.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    if fmt is LabelFormat.SLICER_CSV:
        return slicer_ctbl.parse_slicer_csv(path.read_text(encoding="utf-8"), str(path),
                                            delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    if fmt is LabelFormat.SLICER_CTBL:
        return slicer_ctbl.parse_ctbl(path.read_text(encoding="utf-8", errors="replace"), str(path))
    if fmt is LabelFormat.ITKSNAP:
        return itksnap.read_itksnap_labels(path)
    return read_nifti_labels(path)


def read_nifti_labels(path: str | Path) -> LabelDescription:
    """The label table a NIfTI embeds; when it is exactly a built-in model's class map (TotalSegmentator writes its
    own), the codes of that map are added so the file describes itself fully. The file's colours are kept."""
    description = nifti_table.read_nifti_label_table(path)
    map_name = model_maps.identify_model_map(description)
    if map_name is None:
        return description
    enriched = model_maps.enrich_from_model_map(description, map_name)
    enriched.source = f"{path} (codes from {map_name})"
    return enriched


def write_label_description(description: LabelDescription, path: str | Path,
                            fmt: LabelFormat | str | None = None) -> Path:
    """Write in ``fmt``, or the format the file name implies (``.json`` -> dcmqi, ``.csv`` -> Slicer CSV, ...)."""
    path = Path(path)
    fmt = LabelFormat(fmt) if fmt is not None else _format_from_name(path)
    if fmt is LabelFormat.DCMQI_JSON:
        return dcmqi_json.write_dcmqi_json(description, path)
    if fmt is LabelFormat.SLICER_CSV:
        return write_text_atomically(path, slicer_ctbl.slicer_csv_text(description))
    if fmt is LabelFormat.SLICER_CTBL:
        return write_text_atomically(path, slicer_ctbl.ctbl_text(description, str(path)))
    if fmt is LabelFormat.ITKSNAP:
        return itksnap.write_itksnap_labels(description, path)
    if fmt is LabelFormat.OURS_JSON:
        return write_text_atomically(path, json.dumps(description.to_json(), indent=2, ensure_ascii=False) + "\n")
    raise ValueError(f"cannot write {fmt.value}: it is a read-only format")


def _format_from_name(path: Path) -> LabelFormat:
    name = path.name.lower()
    for fmt, suffix in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return {".json": LabelFormat.DCMQI_JSON, ".csv": LabelFormat.SLICER_CSV, ".tsv": LabelFormat.SLICER_CSV,
            ".ctbl": LabelFormat.SLICER_CTBL, ".txt": LabelFormat.ITKSNAP, ".label": LabelFormat.ITKSNAP,
            }.get(path.suffix.lower(), LabelFormat.DCMQI_JSON)


# ---- the two calls the CLI makes -------------------------------------------------------------------------------

def label_segmentation(layered: LayeredSegmentation, spec: str | Path) -> tuple[LayeredSegmentation, list[str]]:
    """``segqa export-seg --labels SPEC``: read the description and apply it to the label volume's segments."""
    return apply_label_description(layered, read_label_description(spec))


def write_description_beside(layered: LayeredSegmentation, volume_path: str | Path,
                             formats: tuple[LabelFormat, ...] = (LabelFormat.DCMQI_JSON, LabelFormat.SLICER_CSV),
                             ) -> list[Path]:
    """``segqa load-seg``: write what the segments mean next to the label volume written for them, e.g.
    ``seg.nii.gz`` -> ``seg.dcmqi.json`` (dcmqi metadata) and ``seg.labels.csv`` (Slicer colour table with
    terminology). A multi-layer segmentation gets one colour table per layer (``seg.layer1.labels.csv``, ...)."""
    volume_path = Path(volume_path)
    stem = volume_path.name
    for ending in (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd"):
        if stem.lower().endswith(ending):
            stem = stem[: -len(ending)]
            break
    description = description_from_segmentation(layered, source=str(volume_path))
    written = []
    for fmt in formats:
        fmt = LabelFormat(fmt)
        layers = description.layers()
        if fmt in (LabelFormat.DCMQI_JSON, LabelFormat.OURS_JSON) or len(layers) <= 1:
            written.append(write_label_description(description, volume_path.with_name(stem + SUFFIXES[fmt]), fmt))
            continue
        for layer in layers:
            part = LabelDescription([e for e in description.entries if e.layer == layer], source=description.source)
            name = f"{stem}.layer{layer}{SUFFIXES[fmt]}"
            written.append(write_label_description(part, volume_path.with_name(name), fmt))
    return written
