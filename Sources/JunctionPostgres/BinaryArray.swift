import JunctionCore
import NIOCore
import PostgresNIO

/// One column of a batch as a one-dimensional PostgreSQL array in binary
/// form, each element written into one buffer as it comes: what an
/// `INSERT … SELECT FROM unnest(…)` binds as one parameter. A value, filled
/// by its owner and then bound.
///
/// Why not `[String]` and friends: postgres-nio encodes those element by
/// element through its generic machinery (a length placeholder, the value, the
/// length set afterwards, protocol conformance checks at run time), which was
/// a fifth of the gateway's instructions per message on this backend. Here an
/// element is its length and its bytes, written in place.
///
/// The format is `array_recv`'s: dimensions (1), a has-nulls flag, the
/// element type's oid, the length and lower bound (1) of the dimension, then
/// per element an int32 length (-1 for NULL) and the element's own binary form.
struct BinaryArray: PostgresDynamicTypeEncodable {
    /// The element types a batch needs.
    enum Element {
        case text, int4, int8, bytea

        var oid: UInt32 {
            switch self {
            case .text: 25
            case .int4: 23
            case .int8: 20
            case .bytea: 17
            }
        }

        var arrayType: PostgresDataType {
            switch self {
            case .text: .textArray
            case .int4: .int4Array
            case .int8: .int8Array
            case .bytea: .byteaArray
            }
        }
    }

    let element: Element
    /// Elements written so far.
    private(set) var count = 0
    private var hasNulls = false
    /// The elements' bytes: a plain array, not a ByteBuffer, so that writing
    /// one costs appends to local memory (a ByteBuffer write checks its
    /// storage's uniqueness and exclusive access each time).
    private var elements: [UInt8] = []

    /// An empty column of `element`s, with room for `capacity` elements of
    /// about `bytesPerElement` bytes each.
    init(_ element: Element, capacity: Int, bytesPerElement: Int) {
        self.element = element
        elements.reserveCapacity(capacity * (4 + bytesPerElement))
    }

    /// An int8[] of `values`.
    init(int8s values: [Int64]) {
        self.init(.int8, capacity: values.count, bytesPerElement: 8)
        for value in values { append(value) }
    }

    /// An integer in network byte order, as every length and number of the format is.
    private mutating func write<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { elements.append(contentsOf: $0) }
    }

    /// A fixed-size element: its length, then its value, in one append.
    private mutating func writeElement<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        withUnsafeTemporaryAllocation(byteCount: 4 + size, alignment: 1) { bytes in
            bytes.storeBytes(of: Int32(size).bigEndian, toByteOffset: 0, as: Int32.self)
            bytes.storeBytes(of: value.bigEndian, toByteOffset: 4, as: T.self)
            elements.append(contentsOf: bytes)
        }
    }

    mutating func append(_ text: String) {
        precondition(element == .text, "a text element in an array of \(element)")
        text.withUTF8Bytes { utf8 in
            write(Int32(utf8.count))
            elements.append(contentsOf: utf8)
        }
        count += 1
    }

    mutating func append(_ value: Int32) {
        precondition(element == .int4, "an int4 element in an array of \(element)")
        writeElement(value)
        count += 1
    }

    mutating func append(_ value: Int64) {
        precondition(element == .int8, "an int8 element in an array of \(element)")
        writeElement(value)
        count += 1
    }

    mutating func append(bytes: [UInt8]) {
        precondition(element == .bytea, "a bytea element in an array of \(element)")
        write(Int32(bytes.count))
        elements.append(contentsOf: bytes)
        count += 1
    }

    /// A NULL element, of any type.
    mutating func appendNull() {
        write(Int32(-1))
        hasNulls = true
        count += 1
    }

    var psqlType: PostgresDataType { element.arrayType }
    var psqlFormat: PostgresFormat { .binary }

    func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        guard count > 0 else {
            // No dimensions: the empty array.
            buffer.writeMultipleIntegers(Int32(0), Int32(0), element.oid)
            return
        }
        buffer.writeMultipleIntegers(Int32(1), Int32(hasNulls ? 1 : 0), element.oid, Int32(count), Int32(1))
        buffer.writeBytes(elements)
    }
    /// The elements of a one-dimensional int8[] in binary form, as PostgreSQL
    /// sends it (a column decoded as raw bytes): read in one pass, where
    /// postgres-nio's `[Int64]` decodes element by element through its
    /// generic path. NULL elements, another element type or more dimensions
    /// are refused.
    static func int64s(_ value: ByteBuffer) throws -> [Int64] {
        var buffer = value
        guard let (dimensions, _, oid) = buffer.readMultipleIntegers(as: (Int32, Int32, UInt32).self) else {
            throw BrokerError(.storageError, "an int8[] from PostgreSQL is cut short in its header")
        }
        guard dimensions != 0 else { return [] }
        guard dimensions == 1, oid == Element.int8.oid, let (count, _) = buffer.readMultipleIntegers(as: (Int32, Int32).self), count >= 0 else {
            throw BrokerError(.storageError, "expected a one-dimensional int8[] from PostgreSQL (dimensions \(dimensions), element type \(oid))")
        }
        var values: [Int64] = []
        values.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let (length, element) = buffer.readMultipleIntegers(as: (Int32, Int64).self), length == 8 else {
                throw BrokerError(.storageError, "an int8[] from PostgreSQL has a NULL or malformed element")
            }
            values.append(element)
        }
        return values
    }
}
