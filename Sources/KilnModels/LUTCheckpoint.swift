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

    /// The layer matrices that the GPU stacks into one matrix with `name` (`blk.N.attn_q/k/v.weight`, or
    /// `blk.N.ffn_gate/up.weight`), in `tensors`' order, `name` included; nil for any other tensor. A `learned` table is
    /// learned once per such group, since the GPU kernel reads one table per stacked matrix.
    public static func fusedGroup(of name: String, in tensors: [(name: String, shape: [Int])]) -> [(name: String, shape: [Int])]? {
        let parts = name.split(separator: ".")
        guard parts.count == 4, parts[0] == "blk", parts[3] == "weight" else { return nil }
        let groups = [["attn_q", "attn_k", "attn_v"], ["ffn_gate", "ffn_up"]]
        guard let kinds = groups.first(where: { $0.contains(String(parts[2])) }) else { return nil }
        let names = Set(kinds.map { "blk.\(parts[1]).\($0).weight" })
        return tensors.filter { names.contains($0.name) && $0.shape.count == 2 }
    }

    static func littleEndian(_ v: [UInt16]) -> [UInt8] { v.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] } }
    static func littleEndian(_ v: [UInt32]) -> [UInt8] { v.flatMap { x in (0..<4).map { UInt8((x >> (8 * $0)) & 0xff) } } }
}
