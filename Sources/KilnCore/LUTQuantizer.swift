import Foundation

/// One matrix quantized to a lookup-table format: the planes of `WeightFormat.lut` (see `LUTCodes` for the code layout).
public struct LUTQuantizedMatrix {
    public let format: WeightFormat.LUTFormat
    public let rows: Int, cols: Int
    public var codes: [UInt8]        // [rows, ceil(cols·bits/8)] packed
    public var scales: [UInt16]      // [rows, cols/g] f16
    public var offsets: [UInt16]?    // [rows, cols/g] f16, affine formats only
    public var table: [Float]        // [2^bits]
    /// ‖W − Ŵ‖_F / ‖W‖_F, Ŵ = the planes through the CPU reference (`LUTCodes.dequantizeRow`).
    public var relativeError: Double
    /// `learned` only: the relative error of the fixed table the learned one started from (never below `relativeError`
    /// for a matrix learned alone; for a member of a fused group only the group's total error is never above its seed's).
    public var seedRelativeError: Double? = nil

    /// The values the planes stand for, row-major, through the format's one CPU reference.
    public func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        codes.withUnsafeBufferPointer { c in scales.withUnsafeBufferPointer { s in table.withUnsafeBufferPointer { t in
            out.withUnsafeMutableBufferPointer { o in
                let offs = offsets ?? []
                offs.withUnsafeBufferPointer { m in
                    for r in 0..<rows {
                        LUTCodes.dequantizeRow(r, format: format, cols: cols, codes: c.baseAddress!, scales: s.baseAddress!,
                                               offsets: offsets == nil ? nil : m.baseAddress!, table: t.baseAddress!,
                                               into: o.baseAddress! + r * cols)
                    }
                }
            }
        } } }
        return out
    }
}

/// Quantizer of the lookup-table family. Per group of g weights, the scale (and offset) is searched to minimise the
/// group's squared reconstruction error rather than taken from the plain absmax: candidates around
/// absmax / |table extreme| (both table ends, since a table like NF4 or int is not symmetric; negative scales allowed),
/// or (max − min) / table range for affine groups, each refined by the least-squares scale (and offset) for its codes,
/// rounded to f16, and the best kept; the codes are then re-chosen for the final f16 scale (llama.cpp's IQ4_NL
/// quantizer searches the same way). Codes are always the nearest table entry.
///
/// `learned` tables: the fixed table of its bit width (int, nf, and fp4 at 4 bits) that reconstructs a sample of the
/// matrix's rows best seeds a 1-D k-means (Lloyd) of the group-normalized weights u = (w − offset) / scale, weighted by scale²
/// so that its objective is exactly the reconstruction error; scales are then searched again with the learned table
/// (the current scale among the candidates) and Lloyd runs once more. Every step cannot increase the error, and the
/// result is compared with the seed at the end, so a learned table never reconstructs a matrix worse than the fixed
/// table it starts from (`seedRelativeError`; the seed is the best fixed table on the sample, nearly always NF at 4 bits).
/// `quantizeGroup` does the same over the matrices the GPU fuses (q/k/v, gate/up), which then share one table; the
/// guarantee is then the group's total error. `custom` tables are quantized against the table given.
public enum LUTQuantizer {
    /// Multipliers of the base scale tried per group: 0.70…1.30 by 0.02: on SmolLM2-135M NF4 g64 this grid costs +28.8% perplexity where 0.80…1.20 by 0.04 cost +33.3%.
    static let scaleGrid: [Float] = stride(from: Float(0.70), through: 1.3001, by: 0.02).map { $0 }
    /// The coarser grid of the second search of `learned` (which also keeps each group's current scale as a candidate).
    static let refineGrid: [Float] = stride(from: Float(0.80), through: 1.2001, by: 0.04).map { $0 }

    /// Quantizes `weights` (`[rows, cols]` row-major). `name` is for errors; `table` is required for `custom` only.
    public static func quantize(_ weights: [Float], rows: Int, cols: Int, format: WeightFormat.LUTFormat,
                                table custom: [Float]? = nil, name: String = "matrix") throws -> LUTQuantizedMatrix {
        _ = try WeightFormat.lut(format).planes(rows: rows, cols: cols, what: "tensor \(name)")
        guard weights.count == rows * cols else { throw KilnError("tensor \(name): \(weights.count) values for [\(rows), \(cols)]") }
        if let bad = weights.firstIndex(where: { !$0.isFinite }) {
            throw KilnError("tensor \(name): element \(bad) is \(weights[bad]); only finite weights can be quantized")
        }
        switch format.table {
        case .int, .nf, .fp4:
            return try withTable(weights, rows, cols, format, try LUTTables.fixed(format)!, name)
        case .custom:
            guard let custom, custom.count == 1 << format.bits, custom.allSatisfy(\.isFinite) else {
                throw KilnError("tensor \(name): a custom table needs \(1 << format.bits) finite values")
            }
            return try withTable(weights, rows, cols, format, custom, name)
        case .learned:
            return try quantizeGroup([(weights, rows, cols, name)], format: format)[0]
        }
    }

    /// Quantizes the matrices of one fused group (q/k/v of a layer, or gate/up), which the GPU stacks into one matrix
    /// read with one table: a `learned` table is learned once over the union of the members' normalized weights (the
    /// seed is the fixed table with the least total error on the members' sampled rows; Lloyd and the scale search run
    /// on all members together) and every member carries it. The guarantee is then the group's: the members' total
    /// squared error is never above the seed's (one member alone may be, slightly). Fixed and custom tables are the same
    /// for every matrix anyway and are quantized one by one. Each member is `[rows, cols]` row-major.
    public static func quantizeGroup(_ members: [(weights: [Float], rows: Int, cols: Int, name: String)],
                                     format: WeightFormat.LUTFormat, table custom: [Float]? = nil) throws -> [LUTQuantizedMatrix] {
        guard format.table == .learned else {
            return try members.map { try quantize($0.weights, rows: $0.rows, cols: $0.cols, format: format, table: custom, name: $0.name) }
        }
        guard !members.isEmpty else { return [] }
        for m in members {
            _ = try WeightFormat.lut(format).planes(rows: m.rows, cols: m.cols, what: "tensor \(m.name)")
            guard m.weights.count == m.rows * m.cols else { throw KilnError("tensor \(m.name): \(m.weights.count) values for [\(m.rows), \(m.cols)]") }
            if let bad = m.weights.firstIndex(where: { !$0.isFinite }) {
                throw KilnError("tensor \(m.name): element \(bad) is \(m.weights[bad]); only finite weights can be quantized")
            }
        }
        var kinds: [WeightFormat.LUTFormat.Table] = [.int, .nf]
        if format.bits == 4 { kinds.append(.fp4) }
        // The seed table is chosen on up to 64 evenly spaced rows of each member (each fixed table is a full search),
        // by the total squared error over the members; then every member is quantized with it in full.
        let samples: [(w: [Float], rows: Int, cols: Int, name: String)] = members.map { m in
            let rows = Array(stride(from: 0, to: m.rows, by: max(1, m.rows / 64)))
            return (rows.flatMap { m.weights[($0 * m.cols)..<(($0 + 1) * m.cols)] }, rows.count, m.cols, m.name)
        }
        var bestTable: [Float] = [], bestError = Double.infinity
        for kind in kinds {
            var f = format; f.table = kind
            let table = try LUTTables.fixed(f)!
            var total = 0.0
            for s in samples {
                let e = try withTable(s.w, s.rows, s.cols, format, table, s.name).relativeError
                total += e * e * squaredNorm(s.w)
            }
            if total < bestError { bestTable = table; bestError = total }
        }
        let seeds = try members.map { try withTable($0.weights, $0.rows, $0.cols, format, bestTable, $0.name) }
        return try learn(members.map(\.weights), seeds: seeds, members.map(\.name))
    }

    /// `w` quantized with `table` by the per-group search; `previous` (same table size) adds each group's current scale
    /// and offset to its candidates.
    static func withTable(_ w: [Float], _ rows: Int, _ cols: Int, _ f: WeightFormat.LUTFormat, _ table: [Float],
                          _ name: String, previous: LUTQuantizedMatrix? = nil) throws -> LUTQuantizedMatrix {
        let groups = cols / f.groupSize, g = f.groupSize, rb = LUTCodes.rowBytes(cols: cols, bits: f.bits)
        var codes = [UInt8](repeating: 0, count: rows * rb)
        var scales = [UInt16](repeating: 0, count: rows * groups), offsets = [UInt16](repeating: 0, count: rows * groups)
        let book = Codebook(table)
        let chunk = max(1, rows / 64)
        w.withUnsafeBufferPointer { wp in codes.withUnsafeMutableBufferPointer { cp in
            scales.withUnsafeMutableBufferPointer { sp in offsets.withUnsafeMutableBufferPointer { op in
                let (wb, cb, sb, ob) = (wp.baseAddress!, cp.baseAddress!, sp.baseAddress!, op.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: (rows + chunk - 1) / chunk) { part in
                    var rowCodes = [UInt8](repeating: 0, count: cols)
                    rowCodes.withUnsafeMutableBufferPointer { rc in
                        for r in (part * chunk)..<min(rows, (part + 1) * chunk) {
                            for gi in 0..<groups {
                                let i = r * groups + gi
                                let start: (Float, Float)? = previous.map {
                                    (halfToFloat($0.scales[i]), $0.offsets.map { halfToFloat($0[i]) } ?? 0)
                                }
                                let (s, m) = book.searchGroup(wb + r * cols + gi * g, g, affine: f.hasOffsets, start: start,
                                                              codes: rc.baseAddress! + gi * g)
                                sb[i] = s; ob[i] = m
                            }
                            LUTCodes.pack(rc.baseAddress!, count: cols, bits: f.bits, into: cb + r * rb)
                        }
                    }
                }
            } }
        } }
        if let bad = scales.firstIndex(where: { !halfToFloat($0).isFinite }) ?? offsets.firstIndex(where: { !halfToFloat($0).isFinite }) {
            throw KilnError("tensor \(name): group \(bad) needs a scale or offset beyond f16's range")
        }
        var q = LUTQuantizedMatrix(format: f, rows: rows, cols: cols, codes: codes, scales: scales,
                                   offsets: f.hasOffsets ? offsets : nil, table: table, relativeError: 0, seedRelativeError: nil)
        q.relativeError = relativeError(w, q.dequantized())
        return q
    }

    public static func relativeError(_ w: [Float], _ r: [Float]) -> Double {
        var num = 0.0, den = 0.0
        for i in 0..<w.count { let d = Double(w[i]) - Double(r[i]); num += d * d; den += Double(w[i]) * Double(w[i]) }
        return den > 0 ? (num / den).squareRoot() : (num > 0 ? .infinity : 0)
    }

    static func squaredNorm(_ w: [Float]) -> Double { w.reduce(0.0) { $0 + Double($1) * Double($1) } }

    /// ‖W − Ŵ‖² / ‖W‖² summed over a group: Σ e_i² ‖W_i‖² / Σ ‖W_i‖² (`norms` the ‖W_i‖²), square-rooted.
    static func groupRelativeError(_ qs: [LUTQuantizedMatrix], norms: [Double]) -> Double {
        let den = norms.reduce(0, +), num = zip(qs, norms).reduce(0.0) { $0 + $1.0.relativeError * $1.0.relativeError * $1.1 }
        return den > 0 ? (num / den).squareRoot() : 0
    }

    /// Weighted Lloyd on the seeds' normalized weights (all members together), a scale search of every member with the
    /// learned table, Lloyd again; the group keeps the seeds if the learned table does not lower the total error.
    static func learn(_ ws: [[Float]], seeds: [LUTQuantizedMatrix], _ names: [String]) throws -> [LUTQuantizedMatrix] {
        var qs = seeds
        var table = lloyd(ws, qs, iterations: 8)
        qs = try zip(ws, qs).enumerated().map { i, p in
            try withTable(p.0, p.1.rows, p.1.cols, p.1.format, table, names[i], previous: p.1)
        }
        table = lloyd(ws, qs, iterations: 4)
        let book = Codebook(table)
        for (i, w) in ws.enumerated() {   // codes re-chosen for the final table (the last Lloyd step moved the centroids)
            var q = qs[i]
            q.table = table
            var codes = [UInt8](repeating: 0, count: q.cols)
            let g = q.format.groupSize, groups = q.cols / g, rb = LUTCodes.rowBytes(cols: q.cols, bits: q.format.bits)
            for r in 0..<q.rows {
                for gi in 0..<groups {
                    let s = halfToFloat(q.scales[r * groups + gi]), m = q.offsets.map { halfToFloat($0[r * groups + gi]) } ?? 0
                    for k in 0..<g { codes[gi * g + k] = UInt8(book.nearest(s == 0 ? 0 : (w[r * q.cols + gi * g + k] - m) / s)) }
                }
                codes.withUnsafeBufferPointer { c in q.codes.withUnsafeMutableBufferPointer { LUTCodes.pack(c.baseAddress!, count: q.cols, bits: q.format.bits, into: $0.baseAddress! + r * rb) } }
            }
            q.relativeError = relativeError(w, q.dequantized())
            qs[i] = q
        }
        let norms = ws.map(squaredNorm)
        // Float noise aside, Lloyd cannot lose; never return a group worse than its seed.
        if groupRelativeError(qs, norms: norms) >= groupRelativeError(seeds, norms: norms) { qs = seeds }
        for i in qs.indices { qs[i].seedRelativeError = seeds[i].relativeError }
        return qs
    }

    /// `iterations` rounds of weighted 1-D k-means of u = (w − m)/s (weight s²) over all of `qs` (one table, which
    /// they share), starting from their table and codes. Each round moves every entry to the weighted mean of its
    /// members, then re-chooses every code; neither step can increase Σ s²(u − table[code])², which is the group's
    /// total reconstruction error.
    static func lloyd(_ ws: [[Float]], _ qs: [LUTQuantizedMatrix], iterations: Int) -> [Float] {
        let n = 1 << qs[0].format.bits
        var table = qs[0].table
        // Normalized weights and their weights, per element; zero-scale groups carry no weight.
        var u: [Float] = [], weight: [Float] = [], codes: [Int] = []
        for (w, q) in zip(ws, qs) {
            let g = q.format.groupSize, groups = q.cols / g, rb = LUTCodes.rowBytes(cols: q.cols, bits: q.format.bits)
            u.reserveCapacity(u.count + w.count); weight.reserveCapacity(weight.count + w.count); codes.reserveCapacity(codes.count + w.count)
            q.codes.withUnsafeBufferPointer { c in
                for r in 0..<q.rows {
                    for gi in 0..<groups {
                        let s = halfToFloat(q.scales[r * groups + gi]), m = q.offsets.map { halfToFloat($0[r * groups + gi]) } ?? 0
                        for k in (gi * g)..<((gi + 1) * g) {
                            u.append(s == 0 ? 0 : (w[r * q.cols + k] - m) / s)
                            weight.append(s * s)
                            codes.append(LUTCodes.code(c.baseAddress! + r * rb, k, bits: q.format.bits))
                        }
                    }
                }
            }
        }
        for _ in 0..<iterations {
            var sum = [Double](repeating: 0, count: n), total = [Double](repeating: 0, count: n)
            for i in 0..<u.count {
                let wt = Double(weight[i])
                sum[codes[i]] += wt * Double(u[i]); total[codes[i]] += wt
            }
            for j in 0..<n where total[j] > 0 { table[j] = Float(sum[j] / total[j]) }
            let book = Codebook(table)
            for i in 0..<u.count { codes[i] = book.nearest(u[i]) }
        }
        return table
    }
}

/// A table sorted for nearest-entry search (at most 16 entries), with the codes of the sorted entries.
struct Codebook {
    let table: [Float]
    /// The entries in ascending order, padded with the largest.
    let sorted: SIMD16<Float>
    let count: Int
    let code: [Int]
    /// Midpoints between neighbouring sorted entries, padded with +∞: the nearest entry of u is sorted[#midpoints < u].
    let mids: SIMD16<Float>

    init(_ table: [Float]) {
        precondition(table.count >= 2 && table.count <= 16)
        self.table = table
        let order = table.indices.sorted { table[$0] < table[$1] }
        var s = SIMD16<Float>(repeating: table[order.last!]), m = SIMD16<Float>(repeating: .infinity)
        for (i, c) in order.enumerated() { s[i] = table[c] }
        for i in 0..<(order.count - 1) { m[i] = (s[i] + s[i + 1]) / 2 }
        code = order; sorted = s; mids = m; count = table.count
    }

    /// Position in `sorted` of the entry nearest to u (16 compares in one vector operation).
    @inline(__always) func rank(_ u: Float) -> Int {
        Int(SIMD16<Int32>(repeating: 0).replacing(with: 1, where: SIMD16<Float>(repeating: u) .> mids).wrappedSum())
    }
    @inline(__always) func nearest(_ u: Float) -> Int { code[rank(u)] }
    @inline(__always) func nearestValue(_ u: Float) -> Float { sorted[rank(u)] }

    /// Searches one group's f16 scale and offset (see `LUTQuantizer`); writes the group's codes, returns the f16 bits.
    func searchGroup(_ x: UnsafePointer<Float>, _ n: Int, affine: Bool, start: (Float, Float)?,
                     codes: UnsafeMutablePointer<UInt8>) -> (UInt16, UInt16) {
        var lo = x[0], hi = x[0], extreme = x[0]
        for k in 0..<n { lo = min(lo, x[k]); hi = max(hi, x[k]); if abs(x[k]) > abs(extreme) { extreme = x[k] } }
        let tLo = sorted[0], tHi = sorted[count - 1]
        let grid = start == nil ? LUTQuantizer.scaleGrid : LUTQuantizer.refineGrid
        var xx: Float = 0, sx: Float = 0
        for k in 0..<n { xx += x[k] * x[k]; sx += x[k] }
        // Each candidate: its nearest codes, then the least-squares scale (and offset) for those codes; candidates are
        // ranked by that fit's error in closed form (Σx² − fitted part), one pass each, and the two best fits are then
        // rounded to f16 and measured exactly (rounding can reorder near-ties). No arrays: this runs once per group.
        var first: (err: Float, s: Float, m: Float) = (.infinity, 0, 0), second = first
        func consider(_ s: Float, _ m: Float) {
            guard s != 0, s.isFinite, m.isFinite else { return }
            let inv = 1 / s
            var st: Float = 0, tt: Float = 0, sTab: Float = 0
            for k in 0..<n {
                let t = nearestValue((x[k] - m) * inv)
                st += x[k] * t; tt += t * t; sTab += t
            }
            var fit: (err: Float, s: Float, m: Float)
            if affine {
                let count = Float(n), varT = tt - sTab * sTab / count, cov = st - sx * sTab / count
                if varT > 0 {
                    let fitS = cov / varT
                    fit = (xx - sx * sx / count - fitS * cov, fitS, (sx - fitS * sTab) / count)
                } else {
                    fit = (xx - sx * sx / count, s, (sx - s * sTab) / count)
                }
            } else if tt > 0 {
                fit = (xx - st * st / tt, st / tt, 0)
            } else { return }
            if fit.err < first.err { second = first; first = fit } else if fit.err < second.err { second = fit }
        }
        if let (s, m) = start { consider(s, m) }   // refitted like the others; also kept as it is below
        if affine {
            let s0 = tHi > tLo ? (hi - lo) / (tHi - tLo) : 0, center = (hi + lo) / 2, tCenter = (tHi + tLo) / 2
            for f in grid { consider(s0 * f, center - s0 * f * tCenter) }
        } else {
            for f in grid { if tLo != 0 { consider(extreme / tLo * f, 0) }; if tHi != 0 { consider(extreme / tHi * f, 0) } }
        }
        var best: (s: UInt16, m: UInt16, err: Float) = (0, floatToHalf(affine ? (hi + lo) / 2 : 0), .infinity)
        if best.s == 0 { best.err = groupError(x, n, 0, halfToFloat(best.m)) }
        for r in [first, second] where r.err.isFinite {
            let s16 = floatToHalf(r.s), m16 = floatToHalf(r.m)
            let err = groupError(x, n, halfToFloat(s16), halfToFloat(m16))
            if err < best.err { best = (s16, m16, err) }
        }
        if let (s, m) = start {   // the previous scale as it is (already f16): a repeated search never loses
            let err = groupError(x, n, s, m)
            if err <= best.err { best = (floatToHalf(s), floatToHalf(m), err) }
        }
        let s = halfToFloat(best.s), m = halfToFloat(best.m)
        for k in 0..<n { codes[k] = UInt8(s == 0 ? nearest(0) : nearest((x[k] - m) / s)) }
        return (best.s, best.m)
    }

    /// Squared error of the group with the nearest codes for scale `s` and offset `m`.
    @inline(__always) func groupError(_ x: UnsafePointer<Float>, _ n: Int, _ s: Float, _ m: Float) -> Float {
        guard s.isFinite, m.isFinite else { return .infinity }
        var e: Float = 0
        for k in 0..<n {
            let v = s == 0 ? m : nearestValue((x[k] - m) / s) * s + m
            e += (x[k] - v) * (x[k] - v)
        }
        return e
    }
}
