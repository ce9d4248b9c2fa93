import JunctionProtocol
import NIOCore
import NIOTestUtils
import XCTest

/// NIO's own check of a ByteToMessageDecoder: fed whole, byte by byte and in
/// random chunks, it must produce the same frames (XCTest, as NIOTestUtils asks).
final class DecoderVerifierTests: XCTestCase {
    func testDecoderWithVerifier() throws {
        let frames = sampleFrames()
        let inputs: [(ByteBuffer, [Frame])] = frames.map { frame in
            var buffer = ByteBuffer()
            FrameCodec.encode(frame, into: &buffer)
            return (buffer, [frame])
        }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: inputs) { FrameDecoder(maxFrameBytes: 1 << 20) }
    }
}
