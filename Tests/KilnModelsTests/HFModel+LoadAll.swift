import KilnCore
@testable import KilnModels

extension HFModel {
    /// Loads every tensor of the model as the engine would (matrices through `matrix`), then checks strictness:
    /// the matrices by canonical name.
    func loadAllMatrices() throws -> [String: QuantizedMatrix] {
        var out: [String: QuantizedMatrix] = [:]
        for t in config.canonicalTensorShapes {
            if t.shape.count == 2 { out[t.name] = try matrix(t.name, rows: t.shape[0], cols: t.shape[1]) }
            else { _ = try tensor(t.name, shape: t.shape) }
        }
        try checkAllUsed()
        return out
    }
}
