import CCRC32C

/// The recovery checkpoint: a log position below which every record is on disk
/// and indexed durably. Recovery re-indexes only what lies past it.
enum Checkpoint {
    static let fileName = "checkpoint"

    static func write(position: UInt64, directory: String) throws {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(position)
        let crc = bytes.withUnsafeBytes { junction_crc32c(0, $0.baseAddress!, 8) }
        bytes.appendLittleEndian(crc)
        try StoreDirectory.writeAtomically(bytes, to: directory + "/" + fileName, directory: directory)
    }

    /// The checkpointed position, or nil when there is none or it is damaged.
    static func read(directory: String) throws -> UInt64? {
        let path = directory + "/" + fileName
        guard StoreDirectory.exists(path) else { return nil }
        let bytes = try StoreFile(path: path, create: false).read(count: 12, at: 0)
        guard bytes.count == 12 else { return nil }
        return bytes.withUnsafeBytes { raw -> UInt64? in
            let position = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
            let stored = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            return junction_crc32c(0, raw.baseAddress!, 8) == stored ? position : nil
        }
    }
}

/// The FORMAT file that names the data directory's layout version, so that a
/// directory written by an incompatible version is refused, not misread.
enum DataFormat {
    static let fileName = "FORMAT"
    static let current = "junction-store 1"

    static func check(directory: String) throws {
        let path = directory + "/" + fileName
        if StoreDirectory.exists(path) {
            let bytes = try StoreFile(path: path, create: false).read(count: 256, at: 0)
            let text = String(decoding: bytes, as: UTF8.self).trimmingNewlines()
            guard text == current else {
                throw StoreError(.incompatibleFormat, "\(path) says \"\(text.prefix(60))\"; this junction reads \"\(current)\". Use the matching junction version, or a new data directory")
            }
            return
        }
        let segments = try StoreDirectory.list(directory + "/log").filter { $0.hasSuffix(".seg") }
        guard segments.isEmpty else {
            throw StoreError(.incompatibleFormat, "\(directory) holds log segments but no \(fileName) file: it was not written by this junction")
        }
        try StoreDirectory.writeAtomically(Array((current + "\n").utf8), to: path, directory: directory)
    }
}

extension String {
    func trimmingNewlines() -> String {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == "\r" || last == " " { text = text.dropLast() }
        return String(text)
    }
}
