"""Label descriptions in and out: what each value of a label volume means (name, colour, DICOM terminology).

Read (``read_label_description(spec)``; the format is detected from the content and extension):
- dcmqi segmentation metadata JSON (``segmentAttributes``; the ``itkimage2segimage`` input),
- Slicer colour tables: the CSV table with terminology columns (``.csv`` / ``.labels.csv``) and the text ``.ctbl``,
- ITK-SNAP label description files,
- the label table embedded in a NIfTI header (TotalSegmentator writes one; when it is exactly a built-in model's
  class map, that map's codes are added: ``--labels seg.nii.gz`` on a TotalSegmentator output is enough),
- our own ``LabelDescription.to_json()``,
- built-in model maps by name: ``totalsegmentator:total`` (v2, 117 classes, also --fast), ``moose:clin_ct_organs``
  and the other MOOSE ``clin_ct_*`` sets (``available_model_maps()``).

Write (``write_label_description(description, path, fmt=None)``): dcmqi JSON, Slicer CSV / ctbl, ITK-SNAP, ours.

For the CLI, one call per direction:
- ``segqa export-seg --labels SPEC``::

      layered, warnings = label_segmentation(layered, spec)   # LayeredSegmentation.from_label_volume(...) first

  names, colours, codes and algorithm of the segments; ``warnings`` holds at most ONE line listing the label values
  the description does not cover ("3 labels have no description in ...: 7, 9, 12").
- ``segqa load-seg`` writing a label volume::

      paths = write_description_beside(layered, "out/seg.nii.gz")  # -> seg.dcmqi.json, seg.labels.csv

``check_label_description(description)`` lists what would make the SEG ambiguous (left/right names without
the laterality code, generic 'Tissue' codes, two labels coded as the same structure).

Errors are ``DicomFidelityError`` subclasses naming the file and the line/field at fault
(``InvalidInputFileError``; ``UnknownLabelMapError`` for a built-in name we do not have).
Data files: ``labels/maps/*.csv`` must be shipped as package data.
"""

from SegmentationQALib.labels.dcmqi_json import dcmqi_json_from_description, read_dcmqi_json, write_dcmqi_json
from SegmentationQALib.labels.description import (
    AlgorithmType,
    LabelDescription,
    LabelEntry,
    UnknownLabelMapError,
    apply_label_description,
    check_label_description,
    description_from_segmentation,
)
from SegmentationQALib.labels.itksnap import read_itksnap_labels, write_itksnap_labels
from SegmentationQALib.labels.loading import (
    LabelFormat,
    detect_label_format,
    label_segmentation,
    read_label_description,
    write_description_beside,
    write_label_description,
)
from SegmentationQALib.labels.model_maps import (
    available_model_maps,
    enrich_from_model_map,
    identify_model_map,
    load_model_map,
)
from SegmentationQALib.labels.nifti_table import read_nifti_label_table
from SegmentationQALib.labels.slicer_ctbl import read_slicer_color_table, write_slicer_color_table

__all__ = [
    "AlgorithmType",
    "LabelDescription",
    "LabelEntry",
    "LabelFormat",
    "UnknownLabelMapError",
    "apply_label_description",
    "available_model_maps",
    "check_label_description",
    "dcmqi_json_from_description",
    "enrich_from_model_map",
    "identify_model_map",
    "description_from_segmentation",
    "detect_label_format",
    "label_segmentation",
    "load_model_map",
    "read_dcmqi_json",
    "read_itksnap_labels",
    "read_label_description",
    "read_nifti_label_table",
    "read_slicer_color_table",
    "write_dcmqi_json",
    "write_description_beside",
    "write_itksnap_labels",
    "write_label_description",
    "write_slicer_color_table",
]
