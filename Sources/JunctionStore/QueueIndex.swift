import JunctionCore
import Synchronization

/// Identifies one queue of one topic.
struct QueueKey: Hashable, Sendable {
    var topic: String
    var queue: Int
}

/// One entry of a queue index: where the record of one queue offset lies.
struct IndexEntry: Sendable, Equatable {
    static let size = 20
    /// Log position of the record; with `size` 0 the entry is a hole (deleted or never written).
    var position: UInt64
    var size: UInt32
    var tagHash: UInt64

    var isHole: Bool { size == 0 }

    /// Writes its 20 bytes (position, size, tag hash, little-endian) at
    /// `offset` of `raw`. (Appending them to an array as a raw buffer cost 82
    /// instructions an entry on the log's writer thread; these are stores.)
    func store(into raw: UnsafeMutableRawBufferPointer, at offset: Int) {
        raw.storeBytes(of: position.littleEndian, toByteOffset: offset, as: UInt64.self)
        raw.storeBytes(of: size.littleEndian, toByteOffset: offset + 8, as: UInt32.self)
        raw.storeBytes(of: tagHash.littleEndian, toByteOffset: offset + 12, as: UInt64.self)
    }

    init(position: UInt64, size: UInt32, tagHash: UInt64) {
        self.position = position
        self.size = size
        self.tagHash = tagHash
    }

    init(_ raw: UnsafeRawBufferPointer, at offset: Int) {
        position = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        size = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self))
        tagHash = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt64.self))
    }
}

/// The index of one queue: fixed-size entries, entry `n` at byte `n * 20` of its
/// file, split into files of `entriesPerFile` entries named after their first
/// offset. It can always be rebuilt from the commit log.
final class QueueIndex: Sendable {
    let key: QueueKey
    let directory: String
    let entriesPerFile: Int
    private let files: Mutex<[UInt64: StoreFile]>

    init(key: QueueKey, root: String, entriesPerFile: Int) throws {
        self.key = key
        self.directory = "\(root)/\(key.topic)/\(key.queue)"
        self.entriesPerFile = entriesPerFile
        try StoreDirectory.create(directory)
        var found: [UInt64: StoreFile] = [:]
        for name in try StoreDirectory.list(directory) where name.hasSuffix(".idx") {
            guard let first = UInt64(name.dropLast(4)) else { continue }
            found[first / UInt64(entriesPerFile)] = try StoreFile(path: "\(directory)/\(name)", create: false)
        }
        self.files = Mutex(found)
    }

    private func path(fileNumber: UInt64) -> String {
        let first = fileNumber * UInt64(entriesPerFile)
        let digits = String(first)
        return "\(directory)/\(String(repeating: "0", count: max(0, 20 - digits.count)))\(digits).idx"
    }

    private func file(number: UInt64, create: Bool) throws -> StoreFile? {
        let existing = files.withLock { $0[number] }
        if let existing { return existing }
        guard create else { return nil }
        let file = try StoreFile(path: path(fileNumber: number), create: true)
        files.withLock { $0[number] = file }
        return file
    }

    /// Number of entries the files hold (one past the highest offset written).
    func entryCount() throws -> UInt64 {
        let last = files.withLock { $0.max(by: { $0.key < $1.key }) }
        guard let (number, file) = last else { return 0 }
        return number * UInt64(entriesPerFile) + (try file.size()) / UInt64(IndexEntry.size)
    }

    /// The lowest file's first offset, or nil when there are no files.
    func firstFileOffset() -> UInt64? {
        files.withLock { $0.keys.min() }.map { $0 * UInt64(entriesPerFile) }
    }

    /// Writes entries for consecutive offsets starting at `first`.
    func write(_ entries: [IndexEntry], from first: UInt64) throws {
        var offset = first
        var index = 0
        var buffer: [UInt8] = []
        while index < entries.count {
            let number = offset / UInt64(entriesPerFile)
            let inFile = Int(offset % UInt64(entriesPerFile))
            let count = min(entries.count - index, entriesPerFile - inFile)
            let bytes = count * IndexEntry.size
            if buffer.count != bytes { buffer = [UInt8](repeating: 0, count: bytes) }
            buffer.withUnsafeMutableBytes { raw in
                for (at, entry) in entries[index..<index + count].enumerated() { entry.store(into: raw, at: at * IndexEntry.size) }
            }
            try file(number: number, create: true)!.write(buffer, at: UInt64(inFile * IndexEntry.size))
            index += count
            offset += UInt64(count)
        }
    }

    /// Reads up to `count` entries from `first`; fewer at the end of the written entries.
    func read(from first: UInt64, count: Int) throws -> [IndexEntry] {
        var result: [IndexEntry] = []
        result.reserveCapacity(count)
        var offset = first
        var raw = [UInt8](repeating: 0, count: min(count, entriesPerFile) * IndexEntry.size)
        while result.count < count {
            let number = offset / UInt64(entriesPerFile)
            let inFile = Int(offset % UInt64(entriesPerFile))
            let want = min(count - result.count, entriesPerFile - inFile)
            guard let file = try file(number: number, create: false) else {
                // A file removed by retention reads as holes, one not yet written as the end.
                let hasLater = files.withLock { $0.keys.contains { $0 > number } }
                guard hasLater else { break }
                result.append(contentsOf: repeatElement(IndexEntry(position: 0, size: 0, tagHash: 0), count: want))
                offset += UInt64(want)
                continue
            }
            let got = try raw.withUnsafeMutableBytes { (buffer) throws -> Int in
                try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want * IndexEntry.size]),
                              at: UInt64(inFile * IndexEntry.size))
            }
            let entries = got / IndexEntry.size
            raw.withUnsafeBytes { buffer in
                for n in 0..<entries { result.append(IndexEntry(buffer, at: n * IndexEntry.size)) }
            }
            offset += UInt64(entries)
            if entries < want { break }
        }
        return result
    }

    /// Reads the entry at `offset`, nil past the end.
    func entry(at offset: UInt64) throws -> IndexEntry? {
        try read(from: offset, count: 1).first
    }

    /// Cuts the index to `count` entries, removing whole files past it.
    func truncate(to count: UInt64) throws {
        let keep = count == 0 ? 0 : (count - 1) / UInt64(entriesPerFile)
        let all = files.withLock { $0 }
        for (number, file) in all {
            if number > keep || count == 0 {
                try StoreDirectory.remove(file.path)
                files.withLock { _ = $0.removeValue(forKey: number) }
            } else if number == keep {
                try file.truncate(to: (count - number * UInt64(entriesPerFile)) * UInt64(IndexEntry.size))
            }
        }
    }

    /// Removes files all of whose entries lie below `offset`, never the last file.
    func removeFiles(below offset: UInt64) throws {
        let all = files.withLock { $0 }
        guard let last = all.keys.max() else { return }
        for (number, file) in all where number < last && (number + 1) * UInt64(entriesPerFile) <= offset {
            try StoreDirectory.remove(file.path)
            files.withLock { _ = $0.removeValue(forKey: number) }
        }
    }

    /// Makes every file durable.
    func sync() throws {
        for file in files.withLock({ Array($0.values) }) { try file.sync() }
    }

    /// The first offset in `lower ..< end` whose entry points at or past
    /// `position` (entries grow with the offset); `end` when none does.
    func firstOffset(atOrAfter position: UInt64, lower: UInt64, end: UInt64) throws -> UInt64 {
        var low = lower
        var high = end
        while low < high {
            let middle = low + (high - low) / 2
            let entry = try entry(at: middle)
            if let entry, !entry.isHole, entry.position >= position { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
