import KilnCore

/// How a lookup-table matrix is stored in a `kiln-lut` safetensors file (see `HFQuantizationConfig.parseLUT`):
/// `*.weight_codes` U8, `*.weight_scales` F16, `*.weight_offsets` F16 (affine only), `*.weight_table` F32.
public enum LUTCheckpoint {
    public static func add(_ q: LUTQuantizedMatrix, hf: String, to writer: inout SafetensorsWriter) {
        let groups = q.cols / q.format.groupSize
        writer.addRaw(hf + "_codes", dtype: .u8, shape: [q.rows, LUTCodes.rowBytes(cols: q.cols, bits: q.format.bits)], bytes: q.codes)
        writer.addRaw(hf + "_scales", dtype: .f16, shape: [q.rows, groups], bytes: littleEndian(q.scales))
        if let offsets = q.offsets { writer.addRaw(hf + "_offsets", dtype: .f16, shape: [q.rows, groups], bytes: littleEndian(offsets)) }
        writer.addRaw(hf + "_table", dtype: .f32, shape: [q.table.count], bytes: littleEndian(q.table.map(\.bitPattern)))
    }

    static func littleEndian(_ v: [UInt16]) -> [UInt8] { v.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] } }
    static func littleEndian(_ v: [UInt32]) -> [UInt8] { v.flatMap { x in (0..<4).map { UInt8((x >> (8 * $0)) & 0xff) } } }
}
