import Logging
import Synchronization

/// Runs `body` and, while it runs, logs a warning every `every` naming the
/// step: a shutdown that hangs says where. (The step is not cut short: what
/// it waits for may still come.) Nothing is logged once it has returned.
public func watched<T: Sendable>(_ step: String, logger: Logger, every: Duration = .seconds(10), _ body: () async throws -> T) async rethrows -> T {
    let finished = Mutex(false)
    let watchdog = Task {
        var waited = Duration.zero
        while true {
            do { try await Task.sleep(for: every) } catch { return }  // the watchdog's period, cancelled when the step ends
            waited += every
            let seconds = waited.components.seconds
            let stop = finished.withLock { finished in
                if !finished { logger.warning("shutdown still waiting", metadata: ["step": "\(step)", "seconds": "\(seconds)"]) }
                return finished
            }
            if stop { return }
        }
    }
    defer {
        finished.withLock { $0 = true }
        watchdog.cancel()
    }
    return try await body()
}
