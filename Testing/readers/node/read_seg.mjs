// Read one DICOM SEG with dcmjs' own (legacy Cornerstone) SEG adapter or with Cornerstone3D's SEG adapter, as a
// viewer does: the reference series' instances give the image ids and metadata, the SEG's pixel data is decoded by
// the adapter. Writes <out>.json (per reference SOPInstanceUID and label map layer: an offset into <out>.bin, which
// holds uint16 segment numbers, rows x columns per slice) or {"error": "..."} with exit code 3.
//
//   node read_seg.mjs dcmjs|cornerstone3d SEG.dcm REFERENCE_DIR OUT_PREFIX
import fs from "node:fs";
import path from "node:path";

const [reader, segPath, referenceDir, outPrefix] = process.argv.slice(2);
const quietConsole = { warn: console.warn, log: console.log, info: console.info, debug: console.debug };
const warnings = [];
for (const key of ["warn", "log", "info", "debug"]) {
  console[key] = (...args) => warnings.push(args.map(String).join(" ").slice(0, 300));
}

function arrayBufferOf(file) {
  const bytes = fs.readFileSync(file);
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

async function main() {
  const dcmjs = (await import("dcmjs")).default;
  const { DicomMessage, DicomMetaDictionary } = dcmjs.data;
  const instances = {};
  const imageIds = [];
  for (const name of fs.readdirSync(referenceDir).sort()) {
    const dataset = DicomMetaDictionary.naturalizeDataset(
      DicomMessage.readFile(arrayBufferOf(path.join(referenceDir, name))).dict);
    delete dataset.PixelData;
    const imageId = `dicomfile:${dataset.SOPInstanceUID}`;
    instances[imageId] = dataset;
    imageIds.push(imageId);
  }
  const num = (v) => Number(v);
  const modules = (type, imageId) => {
    const ds = instances[imageId];
    if (!ds) return undefined;
    const iop = ds.ImageOrientationPatient.map(num);
    const spacing = ds.PixelSpacing.map(num);
    switch (type) {
      case "instance": return ds;
      case "imagePlaneModule": return {
        frameOfReferenceUID: ds.FrameOfReferenceUID, rows: ds.Rows, columns: ds.Columns,
        imageOrientationPatient: iop, rowCosines: iop.slice(0, 3), columnCosines: iop.slice(3, 6),
        imagePositionPatient: ds.ImagePositionPatient.map(num), sliceThickness: num(ds.SliceThickness),
        pixelSpacing: spacing, rowPixelSpacing: spacing[0], columnPixelSpacing: spacing[1] };
      case "imagePixelModule": return {
        samplesPerPixel: 1, photometricInterpretation: ds.PhotometricInterpretation, rows: ds.Rows,
        columns: ds.Columns, bitsAllocated: ds.BitsAllocated, bitsStored: ds.BitsStored, highBit: ds.HighBit,
        pixelRepresentation: ds.PixelRepresentation };
      case "generalSeriesModule": return { seriesInstanceUID: ds.SeriesInstanceUID, modality: ds.Modality };
      case "generalImageModule": return { sopInstanceUID: ds.SOPInstanceUID, instanceNumber: ds.InstanceNumber };
      case "sopCommonModule": return { sopInstanceUID: ds.SOPInstanceUID, sopClassUID: ds.SOPClassUID };
      case "frameNumber": return undefined;
      default: return undefined;
    }
  };
  const custom = {};
  const metadataProvider = {
    get: (type, imageId) => (custom[imageId]?.[type] ?? modules(type, imageId)),
    addCustomMetadata: (imageId, type, value) => { (custom[imageId] ??= {})[type] = value; },
  };

  const segBuffer = arrayBufferOf(segPath);
  const slices = [];  // [{uid, layer, values: Uint16Array}]
  let version;
  if (reader === "dcmjs") {
    version = JSON.parse(fs.readFileSync(new URL("./node_modules/dcmjs/package.json", import.meta.url))).version;
    const result = dcmjs.adapters.Cornerstone.Segmentation.generateToolState(imageIds, segBuffer, metadataProvider);
    if (!result) throw new Error(`generateToolState returned nothing (${warnings.at(-1) ?? "no message"})`);
    const sliceLength = instances[imageIds[0]].Rows * instances[imageIds[0]].Columns;
    result.labelmapBufferArray.forEach((buffer, layer) => {
      const all = new Uint16Array(buffer);
      imageIds.forEach((imageId, index) => {
        const values = all.subarray(index * sliceLength, (index + 1) * sliceLength);
        if (values.some((v) => v !== 0)) slices.push({ uid: instances[imageId].SOPInstanceUID, layer, values });
      });
    });
  } else if (reader === "cornerstone3d") {
    version = JSON.parse(fs.readFileSync(
      new URL("./node_modules/@cornerstonejs/adapters/package.json", import.meta.url))).version;
    const core = await import("@cornerstonejs/core");
    core.metaData.addProvider((type, imageId) => metadataProvider.get(type, imageId), 10000);
    const { adaptersSEG } = await import("@cornerstonejs/adapters");
    const result = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
      imageIds, segBuffer, { metadataProvider });
    result.labelMapImages.forEach((layerImages, layer) => {
      layerImages.forEach((image) => {
        const data = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
        const values = Uint16Array.from(data);
        if (values.some((v) => v !== 0)) {
          slices.push({ uid: instances[image.referencedImageId].SOPInstanceUID, layer, values });
        }
      });
    });
  } else {
    throw new Error(`unknown reader ${reader}`);
  }
  let offset = 0;
  const index = slices.map(({ uid, layer, values }) => {
    const entry = { uid, layer, offset, length: values.length };
    offset += values.length;
    return entry;
  });
  const all = new Uint16Array(offset);
  slices.forEach(({ values }, i) => all.set(values, index[i].offset));
  fs.writeFileSync(`${outPrefix}.bin`, Buffer.from(all.buffer));
  fs.writeFileSync(`${outPrefix}.json`, JSON.stringify({ reader, version, node: process.version, slices: index,
                                                         warnings: warnings.slice(0, 20) }));
}

main().catch((error) => {
  fs.writeFileSync(`${outPrefix}.json`, JSON.stringify({ error: String(error?.message ?? error),
                                                         warnings: warnings.slice(0, 20) }));
  quietConsole.warn(String(error?.stack ?? error));
  process.exit(3);
});
