/// Unicode character classes the pre-tokenizer regexes ask about (`\p{L}`, `\p{N}`, `\s`, `[\r\n]`), as bit flags.
///
/// Classification reads Swift's Unicode tables once per scalar of the Basic Multilingual Plane into a 64 KiB table
/// (built once, on first use, thread-safely); scalars above it are classified on the fly (they are rare: emoji, CJK extensions).
enum CharacterClass {
    static let letter: UInt8 = 1       // \p{L}: Lu, Ll, Lt, Lm, Lo
    static let number: UInt8 = 2       // \p{N}: Nd, Nl, No
    static let whitespace: UInt8 = 4   // \s: the Unicode White_Space property (what Oniguruma's \s matches)
    static let newline: UInt8 = 8      // \r or \n
    /// Neither whitespace, letter nor number: `[^\s\p{L}\p{N}]`.
    @inline(__always) static func isOther(_ c: UInt8) -> Bool { c & (letter | number | whitespace) == 0 }

    static let basicPlane: [UInt8] = (0..<0x10000).map { classifySlowly(UInt32($0)) }

    @inline(__always) static func of(_ scalar: UInt32) -> UInt8 {
        scalar < 0x10000 ? basicPlane.withUnsafeBufferPointer { $0[Int(scalar)] } : classifySlowly(scalar)
    }

    static func classifySlowly(_ value: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(value) else { return 0 }   // surrogate code points
        let properties = scalar.properties
        var c: UInt8 = 0
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: c |= letter
        case .decimalNumber, .letterNumber, .otherNumber: c |= number
        default: break
        }
        if properties.isWhitespace { c |= whitespace }
        if value == 0x0A || value == 0x0D { c |= newline }
        return c
    }
}

/// GPT-2's reversible mapping of the 256 byte values onto printable Unicode characters, used by byte-level BPE
/// vocabularies: printable Latin-1 bytes map to themselves, the rest (controls, space, ...) to U+0100 and up, in order.
enum ByteLevelMapping {
    /// The character each byte is written as in the vocabulary.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable { table[b] = UInt32(b) } else { table[b] = next; next += 1 }
        }
        return table
    }()

    /// The byte a vocabulary character stands for, or nil when the character is not one of the 256.
    static func byte(for scalar: UInt32) -> UInt8? {
        if scalar < 0x100 {
            let b = Int(scalar)
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            return printable ? UInt8(b) : nil
        }
        return scalarToByte[scalar]
    }
    private static let scalarToByte: [UInt32: UInt8] = {
        var d: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() where s >= 0x100 { d[s] = UInt8(b) }
        return d
    }()

    /// Decodes a vocabulary string to the bytes it stands for; nil when it holds a character outside the mapping.
    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars {
            guard let b = byte(for: s.value) else { return nil }
            out.append(b)
        }
        return out
    }
}
