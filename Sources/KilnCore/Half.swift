/// IEEE half and bfloat16 conversions that do not depend on the platform's `Float16` support.
@inline(__always) public func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = Int((h >> 10) & 0x1f)
    let man = UInt32(h & 0x3ff)
    if exp == 0 {
        if man == 0 { return Float(bitPattern: sign) }
        // subnormal: value = man * 2^-24
        let v = Float(man) * (1.0 / 16_777_216.0)
        return sign != 0 ? -v : v
    }
    if exp == 31 { return Float(bitPattern: sign | 0x7f80_0000 | (man << 13)) }
    return Float(bitPattern: sign | UInt32(exp + 112) << 23 | (man << 13))
}

/// Round-to-nearest-even float -> half.
@inline(__always) public func floatToHalf(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    let sign = UInt16((x >> 16) & 0x8000)
    let exp = Int((x >> 23) & 0xff)
    var man = x & 0x7f_ffff
    if exp == 0xff { return sign | 0x7c00 | (man != 0 ? 0x200 : 0) }
    var e = exp - 127 + 15
    if e >= 31 { return sign | 0x7c00 }
    if e <= 0 {
        if e < -10 { return sign }
        man |= 0x80_0000
        let shift = UInt32(14 - e)
        var h = man >> shift
        let rem = man & ((1 << shift) - 1)
        let half = UInt32(1) << (shift - 1)
        if rem > half || (rem == half && (h & 1) == 1) { h += 1 }
        return sign | UInt16(h)
    }
    var h = man >> 13
    let rem = man & 0x1fff
    if rem > 0x1000 || (rem == 0x1000 && (h & 1) == 1) {
        h += 1
        if h == 0x400 { h = 0; e += 1; if e >= 31 { return sign | 0x7c00 } }
    }
    return sign | UInt16(e) << 10 | UInt16(h)
}

@inline(__always) public func bf16ToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

/// Round-to-nearest-even float -> bfloat16 (NaN stays NaN).
@inline(__always) public func floatToBF16(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    if f.isNaN { return UInt16(x >> 16) | 0x40 }
    let rounding = ((x >> 16) & 1) + 0x7fff
    return UInt16((x &+ rounding) >> 16)
}
