import JunctionCore
import JunctionTestSupport
import Testing

/// Every promise of `MessageStore`, run against every backend of this build.
@Suite("Storage contract")
struct StorageContractTests {
    @Test("every promise of the storage protocol, on every backend", arguments: StorageContract.checks, StoreBackend.all)
    func promise(_ check: StorageContract.Check, _ backend: StoreBackend) async throws {
        try await check.run(backend)
    }
}
