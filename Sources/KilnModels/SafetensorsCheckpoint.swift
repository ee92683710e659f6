import Foundation
import KilnCore

/// All safetensors files of a Hugging Face folder as one tensor table: `model.safetensors`, or the
/// shards listed by `model.safetensors.index.json` (`weight_map`: tensor name -> shard file name).
public final class SafetensorsCheckpoint {
    public let folder: String
    public let files: [SafetensorsFile]
    /// Tensor name -> (index into `files`, info).
    public let tensors: [String: (file: Int, info: SafetensorsTensorInfo)]

    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    /// Opens the checkpoint in `folder`: the index when present (shards must all exist and agree
    /// with it), otherwise `model.safetensors`.
    public init(folder: String) throws {
        self.folder = folder
        let fm = FileManager.default
        let indexPath = folder + "/" + SafetensorsCheckpoint.indexFileName
        let singlePath = folder + "/" + SafetensorsCheckpoint.singleFileName
        if fm.fileExists(atPath: indexPath) {
            let index = try JSONFile.load(ShardIndex.self, path: indexPath)
            guard !index.weightMap.isEmpty else { throw KilnError("\(indexPath): weight_map is empty") }
            // One open per shard, in sorted order so errors are reproducible.
            let shardNames = Set(index.weightMap.values).sorted()
            var opened: [SafetensorsFile] = []
            var fileIndex: [String: Int] = [:]
            for shard in shardNames {
                // A shard name is a plain file name inside the folder, never a path that escapes it.
                guard !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                    throw KilnError("\(indexPath): weight_map names shard \"\(shard.prefix(80))\", which is not a file name in the folder")
                }
                let shardPath = folder + "/" + shard
                guard fm.fileExists(atPath: shardPath) else {
                    throw KilnError("\(indexPath): shard \(shard) listed in weight_map is missing (\(shardPath))")
                }
                fileIndex[shard] = opened.count
                opened.append(try SafetensorsFile(path: shardPath))
            }
            var table: [String: (file: Int, info: SafetensorsTensorInfo)] = [:]
            for (fi, f) in opened.enumerated() {
                for t in f.tensors {
                    if let prev = table[t.name] {
                        throw KilnError("\(indexPath): tensor \(t.name) appears in both \(opened[prev.file].path) and \(f.path)")
                    }
                    table[t.name] = (fi, t)
                }
            }
            for (name, shard) in index.weightMap.sorted(by: { $0.key < $1.key }) {
                guard let entry = table[name] else {
                    throw KilnError("\(indexPath): weight_map puts tensor \(name) in \(shard), but no shard has it")
                }
                if entry.file != fileIndex[shard] {
                    throw KilnError("\(indexPath): weight_map puts tensor \(name) in \(shard), but it is in \(opened[entry.file].path)")
                }
            }
            files = opened
            tensors = table
        } else if fm.fileExists(atPath: singlePath) {
            let f = try SafetensorsFile(path: singlePath)
            files = [f]
            var table: [String: (file: Int, info: SafetensorsTensorInfo)] = [:]
            for t in f.tensors { table[t.name] = (0, t) }
            tensors = table
        } else {
            throw KilnError("\(folder): no \(SafetensorsCheckpoint.singleFileName) or \(SafetensorsCheckpoint.indexFileName) in the folder")
        }
    }

    public func info(_ name: String) -> (file: SafetensorsFile, info: SafetensorsTensorInfo)? {
        guard let e = tensors[name] else { return nil }
        return (files[e.file], e.info)
    }

    /// A tensor converted to Float, by its name in the checkpoint (for tests and small tensors).
    public func floats(_ name: String) throws -> [Float] {
        guard let e = tensors[name] else { throw KilnError("\(folder): missing tensor \(name)") }
        return try files[e.file].floats(name)
    }
}

/// `model.safetensors.index.json`; `metadata` (total_size) is not needed.
private struct ShardIndex: Decodable {
    var weightMap: [String: String]
    enum CodingKeys: String, CodingKey { case weightMap = "weight_map" }
}
