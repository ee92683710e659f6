import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A read-only memory-mapped file. Tensor data is read in place, never copied whole.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    public let base: UnsafeRawPointer

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw KilnError("\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw KilnError("\(path): cannot stat") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw KilnError("\(path): is a directory, expected a file") }
        size = Int(st.st_size)
        if size == 0 {
            // mmap of length 0 fails; keep a valid pointer to an empty region.
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw KilnError("\(path): mmap failed") }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if size == 0 { UnsafeMutableRawPointer(mutating: base).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    /// Bytes `[offset, offset+count)`, or an error naming the file when the range lies past its end.
    public func bytes(at offset: Int, count: Int, what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw KilnError("\(path): \(what()) at offset \(offset) with \(count) bytes lies past the end of the file (\(size) bytes)")
        }
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }
}

/// Sequential little-endian reader over a mapped file with bounds checks on every read.
public struct ByteCursor {
    public let file: MappedFile
    public var offset: Int

    public init(_ file: MappedFile, offset: Int = 0) { self.file = file; self.offset = offset }

    public mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let n = MemoryLayout<T>.size
        guard offset + n <= file.size else {
            throw KilnError("\(file.path): truncated: reading \(what()) at offset \(offset) needs \(n) bytes, file has \(file.size)")
        }
        let v = file.base.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += n
        return T(littleEndian: v)
    }

    public mutating func readBytes(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= file.size - offset else {
            throw KilnError("\(file.path): truncated: \(what()) at offset \(offset) claims \(count) bytes, only \(max(0, file.size - offset)) left")
        }
        let b = UnsafeRawBufferPointer(start: file.base + offset, count: count)
        offset += count
        return b
    }
}
