import Hummingbird
import JunctionCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The gateway's one HTTP server (Hummingbird): `/metrics` for Prometheus,
/// the admin API under `/api/v1/`, and the dashboard at `/`. With
/// `auth.tokens` configured, everything but the dashboard's static files and
/// the OpenAPI document needs `Authorization: Bearer <token>` of a token with
/// `admin`: none or a wrong one gets 401, one without admin 403.
final class AdminHTTPServer: Service, Sendable {
    private let application: Application<RouterResponder<BasicRequestContext>>
    private let bound = BoundPort()

    init(settings: HTTPSettings, api: AdminAPI, metrics: MetricsCollector?, access: AccessPolicy?, logger: Logger) {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: BearerAdminMiddleware(policy: access))
        router.add(middleware: MethodCheckMiddleware())
        router.get("/metrics") { _, _ -> Response in
            guard let metrics else { throw HTTPError(.notFound, message: "metrics are not collected in this process") }
            let body = await metrics.scrape()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        api.register(on: router)
        Dashboard.register(on: router)
        let host = settings.host.contains(":") ? "[\(settings.host)]" : settings.host
        let bound = self.bound
        application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(settings.host, port: settings.port), serverName: "junction"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? settings.port
                logger.info("http listening", metadata: ["endpoint": "http://\(host):\(port)/", "api": "http://\(host):\(port)/api/v1/"])
                // The metrics endpoint's own line, as before the admin API (scripts look for it).
                logger.info("metrics listening", metadata: ["endpoint": "http://\(host):\(port)/metrics"])
                bound.announce(port)
            },
            logger: logger)
    }

    /// The port it listens on, once bound.
    func boundPort() async -> Int? { await bound.wait() }

    func run() async throws {
        do { try await application.run() } catch {
            bound.announce(nil)
            throw error
        }
        bound.announce(nil)
    }
}

/// With an access policy, admits requests for data only with a bearer token
/// whose grant has `admin`. The dashboard's page, script and style, and the
/// OpenAPI document, hold no data and need none (the page asks for a token).
struct BearerAdminMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let policy: AccessPolicy?

    static func isPublic(_ path: String) -> Bool {
        path == "/" || path == "/index.html" || path == "/favicon.ico" || path.hasPrefix("/assets/") || path == "/api/v1/openapi.json"
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let policy, !Self.isPublic(request.uri.path) else { return try await next(request, context) }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
              let grant = policy.grant(for: String(header.dropFirst("Bearer ".count))) else {
            return Response(status: .unauthorized, headers: [.wwwAuthenticate: "Bearer"])
        }
        guard grant.admin else { return Response(status: .forbidden) }
        return try await next(request, context)
    }
}

/// Answers a known path asked with a method it does not have: 405 with
/// `Allow`, not 404.
struct MethodCheckMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let methods = AdminAPI.methods(of: request.uri.path), !methods.contains(request.method.rawValue),
           !(request.method == .head && methods.contains("GET")) {
            return Response(status: .methodNotAllowed, headers: [.allow: methods.joined(separator: ", ")])
        }
        return try await next(request, context)
    }
}
