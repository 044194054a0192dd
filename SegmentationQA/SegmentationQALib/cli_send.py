"""`segqa send FILES... --to DEST`, and `export-seg --send DEST`: the shared sender (DicomFidelityCommonLib.pacs)
with SegmentationQA's LABELMAP -> BINARY converter injected. Registered by cli.py.

DEST is ``AET@host:port`` (C-STORE) or an ``http(s)://.../dicom-web`` base URL (STOW-RS). Contract:
DicomFidelityCommonLib.cli's; an unreachable destination is one ``error:`` line and exit 1, an object the peer
refuses, or acknowledges but does not list when queried back, is reported in the --json ``objects`` and makes the
exit code 1 after the others were sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from DicomFidelityCommonLib.cli import CommandResult, ProgressBar, add_common_arguments
from DicomFidelityCommonLib.pacs import DEFAULT_CALLING_AET, SendResult
from SegmentationQALib.seg.to_binary import send_with_binary_fallback


def add_send_options(parser, destination_flag: str = "--to", required: bool = True) -> None:
    """The destination and our own calling AE title (for `send`, and `--send` on the export commands)."""
    parser.add_argument(destination_flag, dest="send_to", metavar="DEST", required=required, default=None,
                        help="AET@host:port (DICOM C-STORE) or http(s)://host/.../dicom-web (DICOMweb STOW-RS)")
    parser.add_argument("--aet", default=DEFAULT_CALLING_AET,
                        help=f"our calling AE title for C-STORE (default {DEFAULT_CALLING_AET})")
    parser.add_argument("--send-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="network timeout (connection, association, each response)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="do not query the destination afterwards for what it acknowledged (C-FIND / QIDO-RS); "
                             "by default an object it does not list fails the send")


def send_paths(paths: Iterable[str | Path], args, references: Iterable[str | Path] = (),
               progress=None) -> SendResult:
    """send_with_binary_fallback with the command's send options."""
    return send_with_binary_fallback(paths, args.send_to, references, progress, calling_aet=args.aet,
                                     timeout=args.send_timeout, keep_converted=getattr(args, "keep_converted", None),
                                     verify=args.verify)


def commandSend(args) -> CommandResult:
    result = send_paths(args.files, args, args.reference or (), ProgressBar(not args.quiet))
    outputs = {"converted": [o.converted_path for o in result.objects if o.converted_path]} \
        if args.keep_converted else {}
    return CommandResult(f"{result.summary()} in {result.timings['total']:.2f} s", outputs, result.warnings,
                         result.timings, result.to_json(), result.first_failure())


def add_send_command(sub) -> None:
    send = sub.add_parser("send", help="send DICOM files (SEG, RTSTRUCT, RTDOSE, image series) to a PACS")
    send.add_argument("files", nargs="+", metavar="FILE", help="DICOM files or folders (searched recursively)")
    add_send_options(send)
    send.add_argument("--reference", action="append", metavar="DIR",
                      help="folder of the series a LABELMAP SEG references, when it is not among FILES (needed "
                           "only if the peer refuses LABELMAP and the SEG must go as BINARY); repeatable")
    send.add_argument("--keep-converted", metavar="DIR", default=None,
                      help="keep the BINARY SEGs made for a peer without LABELMAP in this folder")
    add_common_arguments(send)
    send.set_defaults(func=commandSend)
