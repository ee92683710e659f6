import Foundation
import KilnCore

/// Kiln's lookup-table checkpoints (`kiln quantize --to lut4|lut3|lut2`): `quantization_config` =
/// `{"quant_method": "kiln-lut", "bits": 4, "group_size": 64, "table": "nf", "offsets": false}` and per quantized
/// matrix `*.weight_codes` (U8 `[N, ceil(K·bits/8)]`), `*.weight_scales` (F16 `[N, K/g]`), `*.weight_offsets`
/// (F16 `[N, K/g]`, affine only) and `*.weight_table` (F32 `[2^bits]`) in place of `*.weight`.
extension HFQuantizationConfig {
    public static let lutMethod = "kiln-lut"
    public static let lutGroupSizes = [32, 64, 128]

    /// Parses a `kiln-lut` object strictly: every field present, of its type and supported value; unknown fields fail.
    static func parseLUT(_ q: [String: Any], path: String) throws -> HFQuantizationConfig {
        let field = "quantization_config"
        func int(_ key: String) throws -> Int {
            guard let n = q[key] as? NSNumber, !(q[key] is Bool), n.doubleValue == Double(n.intValue) else {
                throw KilnError("\(path): \(field).\(key) is missing or not an integer")
            }
            return n.intValue
        }
        let bits = try int("bits"), group = try int("group_size")
        guard [2, 3, 4].contains(bits) else { throw KilnError("\(path): unsupported \(field).bits \(bits) (supported: 2, 3, 4)") }
        guard lutGroupSizes.contains(group) else {
            throw KilnError("\(path): unsupported \(field).group_size \(group) (supported: \(lutGroupSizes.map(String.init).joined(separator: ", ")))")
        }
        guard let tableName = q["table"] as? String else { throw KilnError("\(path): \(field).table is missing or not a string") }
        guard let table = WeightFormat.LUTFormat.Table(rawValue: tableName) else {
            throw KilnError("\(path): unsupported \(field).table \"\(tableName.prefix(40))\" (supported: \(WeightFormat.LUTFormat.Table.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let offsets = q["offsets"] as? Bool else {
            throw KilnError("\(path): \(field).offsets is missing or not a boolean")
        }
        if table == .fp4 && bits != 4 { throw KilnError("\(path): \(field).table fp4 (e2m1 values) needs bits 4, not \(bits)") }
        let known: Set<String> = ["quant_method", "bits", "group_size", "table", "offsets", "modules_to_not_convert"]
        if let unknown = q.keys.sorted().first(where: { !known.contains($0) }) {
            throw KilnError("\(path): unknown \(field) field \"\(unknown.prefix(60))\" for \(lutMethod) (known: \(known.sorted().joined(separator: ", ")))")
        }
        var skip: [String] = []
        if let v = q["modules_to_not_convert"], !(v is NSNull) {
            guard let names = v as? [String] else { throw KilnError("\(path): \(field).modules_to_not_convert is not a list of strings") }
            skip = names
        }
        return HFQuantizationConfig(format: .lut(.init(bits: bits, groupSize: group, table: table, hasOffsets: offsets)),
                                    modulesToNotConvert: skip)
    }

    var lutJSON: [String: Any]? {
        guard case .lut(let l) = format else { return nil }
        return ["quant_method": Self.lutMethod, "bits": l.bits, "group_size": l.groupSize, "table": l.table.rawValue,
                "offsets": l.hasOffsets, "modules_to_not_convert": modulesToNotConvert]
    }
}

extension HFModel {
    /// The lookup-table matrix stored for Hugging Face weight `hf` (`hf` + `_codes`, `_scales`, [`_offsets`,] `_table`),
    /// or nil when there is no `_codes` tensor (the matrix is stored some other way). Every plane must be present with
    /// its dtype and shape, and the folder's `quantization_config` must be `kiln-lut`; else an error names the tensor.
    func lutMatrix(_ name: String, hf: String, rows: Int, cols: Int) throws -> QuantizedMatrix? {
        guard let codes = checkpoint.info(hf + "_codes") else { return nil }
        guard let q = quantization, case .lut(let l) = q.format else {
            throw KilnError("\(codes.file.path): tensor \(hf)_codes holds lookup-table codes but \(configPath) has no kiln-lut quantization_config")
        }
        if checkpoint.info(hf) != nil {
            throw KilnError("\(codes.file.path): both \(hf) and \(hf)_codes are stored; a matrix is one or the other")
        }
        let layout = try WeightFormat.lut(l).planes(rows: rows, cols: cols, what: "tensor \(hf)")
        let suffixes: [(PlaneRole, String)] = [(.codes, "_codes"), (.scales, "_scales"), (.offsets, "_offsets"), (.table, "_table")]
        if !l.hasOffsets, let stray = checkpoint.info(hf + "_offsets") {
            throw KilnError("\(stray.file.path): tensor \(hf)_offsets is stored but quantization_config.offsets is false")
        }
        var planes: [QuantizedMatrix.Plane] = []
        for want in layout {
            let tensorName = hf + suffixes.first { $0.0 == want.role }!.1
            guard let t = checkpoint.info(tensorName) else {
                throw KilnError("\(codes.file.path): lookup-table matrix \(hf) has no \(tensorName) (\(want.dtype.rawValue) \(want.shape))")
            }
            guard t.info.dtype == want.dtype, t.info.shape == want.shape else {
                throw KilnError("\(t.file.path): tensor \(tensorName) is \(t.info.dtype.rawValue) \(t.info.shape), expected \(want.dtype.rawValue) \(want.shape) for \(WeightFormat.lut(l).name) [\(rows), \(cols)]")
            }
            planes.append(.init(want.role, shape: want.shape, dtype: want.dtype, bytes: try t.file.data(t.info)))
            used.insert(tensorName)
        }
        do {
            return try QuantizedMatrix(name: name, rows: rows, cols: cols, format: .lut(l), planes: planes)
        } catch let e as KilnError { throw KilnError("\(folder): \(e.message)") }
    }
}
