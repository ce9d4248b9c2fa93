// Appends to a commit log with flush=always from several tasks until it is
// killed, writing one line per returned append to stdout:
//   <worker> <sequence> <queue> <queue offset> <message id>
// The crash test kills it with SIGKILL and checks that every reported append
// survived. Usage: store-appender DATA_DIR [SEGMENT_BYTES] [WORKERS]
import Foundation
import JunctionCore
import JunctionStore

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write("usage: store-appender DATA_DIR [SEGMENT_BYTES] [WORKERS]\n".data(using: .utf8)!)
    exit(2)
}
let segmentBytes = arguments.count > 2 ? UInt64(arguments[2]) ?? 1 << 20 : 1 << 20
let workers = arguments.count > 3 ? Int(arguments[3]) ?? 8 : 8
let log = try CommitLog(directory: arguments[1], settings: StoreSettings(flush: .always, segmentBytes: segmentBytes))
/// One line, one write(2): lines from different tasks never interleave on the pipe.
func report(_ line: String) {
    var line = line
    line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}
report("ready \(log.recovery.records)\n")

await withTaskGroup(of: Void.self) { group in
    for worker in 0..<workers {
        group.addTask {
            var sequence = 0
            while true {
                let body = Array("w\(worker)-\(sequence)-".utf8) + [UInt8](repeating: UInt8(sequence % 251), count: sequence % 300)
                let message = Message(topic: "crash", tag: "w\(worker)", properties: ["seq": "\(sequence)"], body: body)
                do {
                    let result = try await log.append([AppendRequest(message: message, queue: worker % 4)])[0]
                    report("\(worker) \(sequence) \(result.queue) \(result.queueOffset) \(result.id)\n")
                } catch {
                    FileHandle.standardError.write("append failed: \(error)\n".data(using: .utf8)!)
                    exit(1)
                }
                sequence += 1
            }
        }
    }
}
