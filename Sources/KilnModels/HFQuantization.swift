import Foundation
import KilnCore

/// `quantization_config` of a Hugging Face `config.json`, as transformers' fine-grained FP8 writes it
/// (`FineGrainedFP8Config`): `{"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128], …}`.
///
/// Every field that would change the numerics must have the one value Kiln implements, else loading fails naming the
/// field; the bookkeeping fields transformers writes are accepted; a field Kiln does not know is an error too, since
/// Kiln cannot tell whether it changes the numerics.
public struct HFQuantizationConfig: Equatable, Sendable {
    /// The weight format of quantized linear weights (`weight` + `weight_scale_inv`).
    public var format: WeightFormat
    /// Module names (or patterns) transformers leaves unquantized; informational: Kiln reads each tensor as stored.
    public var modulesToNotConvert: [String]

    public static let supportedBlock = [128, 128]
    /// Written by transformers without changing how stored weights are computed with.
    public static let bookkeepingFields: Set<String> = ["dequantize", "modules_to_convert", "modules_to_not_convert", "ignored_layers"]

    public init(format: WeightFormat = .fp8E4M3(blockRows: 128, blockCols: 128), modulesToNotConvert: [String] = []) {
        self.format = format; self.modulesToNotConvert = modulesToNotConvert
    }

    /// The `quantization_config` object of `config` (the decoded `config.json` at `path`), or nil when there is none.
    public static func parse(config: [String: Any], path: String) throws -> HFQuantizationConfig? {
        guard let raw = config["quantization_config"], !(raw is NSNull) else { return nil }
        let field = "quantization_config"
        guard let q = raw as? [String: Any] else { throw KilnError("\(path): \(field) is not a JSON object") }
        guard let method = q["quant_method"] as? String else {
            throw KilnError("\(path): \(field).quant_method is missing or not a string")
        }
        if method == lutMethod { return try parseLUT(q, path: path) }   // HFQuantization+LUT.swift
        guard method == "fp8" else {
            throw KilnError("\(path): unsupported \(field).quant_method \"\(method.prefix(40))\" (supported: fp8, transformers' fine-grained FP8; kiln-lut)")
        }
        let scheme = (q["activation_scheme"] as? String) ?? "dynamic"
        guard scheme.lowercased() == "dynamic" else {
            throw KilnError("\(path): unsupported \(field).activation_scheme \"\(scheme.prefix(40))\" (supported: dynamic; static activation scales are not implemented)")
        }
        if let b = q["weight_block_size"], !(b is NSNull) {
            guard let block = (b as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }), block == supportedBlock else {
                throw KilnError("\(path): unsupported \(field).weight_block_size \(b) (supported: [128, 128])")
            }
        } else {
            // Without a block size the scales are per tensor: another format.
            throw KilnError("\(path): \(field).weight_block_size is missing (per-tensor FP8 scales are not supported; expected [128, 128])")
        }
        if let fmt = q["scale_fmt"], !(fmt is NSNull) {
            guard let s = fmt as? String, s == "float" else {
                throw KilnError("\(path): unsupported \(field).scale_fmt \(fmt) (supported: float; power-of-two ue8m0 scales are not implemented)")
            }
        }
        let numerics: Set<String> = ["quant_method", "activation_scheme", "weight_block_size", "scale_fmt"]
        if let unknown = q.keys.sorted().first(where: { !numerics.contains($0) && !bookkeepingFields.contains($0) }) {
            throw KilnError("\(path): unknown \(field) field \"\(unknown.prefix(60))\" (Kiln cannot tell whether it changes the numerics; known: \((numerics.union(bookkeepingFields)).sorted().joined(separator: ", ")))")
        }
        var skip: [String] = []
        for key in ["modules_to_not_convert", "ignored_layers"] {
            guard let v = q[key], !(v is NSNull) else { continue }
            guard let names = v as? [String] else { throw KilnError("\(path): \(field).\(key) is not a list of strings") }
            skip += names
        }
        return HFQuantizationConfig(modulesToNotConvert: skip)
    }

    /// The object Kiln writes (`kiln quantize`), exactly the fields transformers reads.
    public var json: [String: Any] {
        if let lut = lutJSON { return lut }
        guard case .fp8E4M3(let r, let c) = format else { preconditionFailure("HFQuantizationConfig: \(format.name)") }
        return ["quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [r, c],
                "modules_to_not_convert": modulesToNotConvert]
    }
}
