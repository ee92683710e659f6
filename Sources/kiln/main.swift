import KilnModels
import Foundation
for p in CommandLine.arguments.dropFirst() {
    do {
        let g = try GGUFFile(path: p)
        print(p, g.version, g.tensors.count, g.metadata.count, g.architecture ?? "-")
        for k in g.metadataKeys where !k.hasPrefix("tokenizer.ggml.") || true { print("  ", k, g.metadata[k]!) }
        for t in g.tensors.prefix(12) { print("  ", t.name, t.shape, t.typeName) }
    } catch { print("error:", error) }
}
