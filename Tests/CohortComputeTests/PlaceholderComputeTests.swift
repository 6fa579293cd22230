import Testing
@testable import CohortCompute

struct PlaceholderComputeTests {
    @Test func moduleLinks() { #expect(Bool(true)) }
}
