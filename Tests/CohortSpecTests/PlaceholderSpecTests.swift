import Testing
@testable import CohortSpec

struct PlaceholderSpecTests {
    @Test func moduleLinks() { #expect(Bool(true)) }
}
