import JunctionCore
import JunctionPostgres
import JunctionTestSupport
import Testing

/// What the storage contract does not cover of the PostgreSQL backend.
@Suite("PostgreSQL store")
struct PostgresStoreTests {
    @Test("the schema is created and versioned on first use; a database of another schema version is refused, naming it")
    func schemaVersion() async throws {
        let server = PostgresServer.shared
        let database = try server.createDatabase()
        let store = PostgresStore(settings: server.settings(database: database))
        _ = try await store.append([AppendRequest(message: Message(topic: "t", body: [1]), queue: 0)])
        try await store.close()
        #expect(server.execute("UPDATE junction_meta SET value = '99' WHERE key = 'schema_version'", database: database))
        let newer = PostgresStore(settings: server.settings(database: database))
        do {
            _ = try await newer.knownTopics()
            Issue.record("a database of schema version 99 was accepted")
        } catch let error as BrokerError {
            #expect(error.code == .unreadableState && error.message.contains("version 99"), "\(error)")
        }
        try await newer.close()
    }
}
