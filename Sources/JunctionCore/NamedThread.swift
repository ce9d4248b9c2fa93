import Foundation

extension Thread {
    /// The longest thread name Linux keeps, in bytes (16 with the terminating zero).
    public static let osNameBytes = 15

    /// Starts `body` on a new thread that the operating system knows by
    /// `name`: `top -H`, `ps -L`, `/proc/PID/task/*/comm` and debuggers show it.
    ///
    /// Foundation's `name`, set before `start()`, stays inside Foundation: the
    /// new thread keeps the name of the one that made it (on a gateway, a
    /// dispatch worker's "…oot.default-qos"). Set from inside the thread it
    /// reaches the OS, but Linux refuses a name over 15 bytes whole, so the
    /// name is cut to fit first.
    public static func start(named name: String, _ body: @escaping @Sendable () -> Void) {
        let short = osName(name)
        Thread {
            Thread.current.name = short
            body()
        }.start()
    }

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
