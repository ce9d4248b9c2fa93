import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Thread {
    /// The longest thread name Linux keeps, in bytes (16 with the terminating zero).
    public static let osNameBytes = 15

    /// Starts `body` on a new thread that the operating system knows by
    /// `name`: `top -H`, `ps -L`, `/proc/PID/task/*/comm` and debuggers show it.
    ///
    /// Foundation's `name`, set before `start()`, stays inside Foundation: the
    /// new thread keeps the name of the one that made it (on a gateway, a
    /// dispatch worker's "…oot.default-qos"). Set from inside the thread it
    /// reaches the OS only when Foundation already knows the thread as the
    /// current one, which races with `start()` (a loaded test run saw the
    /// inherited name). So the name goes to the OS directly, with
    /// `pthread_setname_np` on the thread itself; Linux refuses a name over
    /// 15 bytes whole, so it is cut to fit first.
    public static func start(named name: String, _ body: @escaping @Sendable () -> Void) {
        let short = osName(name)
        Thread {
            setOSName(short)
            Thread.current.name = short
            body()
        }.start()
    }

    /// Names the calling thread for the OS. `pthread_setname_np` is a GNU
    /// extension the Glibc module does not show Swift, so it is looked up
    /// by name, once.
    private static func setOSName(_ name: String) {
        #if canImport(Glibc)
        guard let setName = pthreadSetName else { return }
        _ = name.withCString { setName(pthread_self(), $0) }
        #endif
    }

    #if canImport(Glibc)
    private typealias SetName = @convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32
    private static let pthreadSetName: SetName? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pthread_setname_np").map { unsafeBitCast($0, to: SetName.self) }
    #endif

    /// `name` cut to the bytes Linux keeps, never inside a character.
    public static func osName(_ name: String) -> String {
        var short = ""
        for character in name {
            guard short.utf8.count + String(character).utf8.count <= osNameBytes else { break }
            short.append(character)
        }
        return short
    }
}
