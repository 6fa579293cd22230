import Testing
@testable import CohortWire

struct PlaceholderWireTests {
    @Test func moduleLinks() { #expect(Bool(true)) }
}
