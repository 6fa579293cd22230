import Testing
@testable import CohortTransport

struct PlaceholderTransportTests {
    @Test func moduleLinks() { #expect(Bool(true)) }
}
