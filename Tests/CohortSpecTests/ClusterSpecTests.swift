import Testing
@testable import CohortSpec

struct ClusterSpecTests {
    static let base = """
        name: tiny
        model: {kind: mlp}
        data: {dataset: digits}
        training: {steps: 10}

        """

    @Test func clusterFieldsAreRead() throws {
        let spec = try JobSpec.parse(yaml: Self.base + """
            cluster:
              min-workers: 2
              max-workers: 4
              institutions: [pku, sjtu]
              resources: {cores: 4, memory-gib: 8}
              priority: 5
            """)
        #expect(spec.cluster.minWorkers == 2 && spec.cluster.maxWorkers == 4)
        #expect(spec.cluster.institutions == ["pku", "sjtu"])
        #expect(spec.cluster.minCores == 4 && spec.cluster.minMemoryGiB == 8)
        #expect(spec.cluster.priority == 5)
    }

    /// Values that passed before and broke later: an institution name with a comma (stored
    /// comma-joined, it split into two names), and memory in bytes where GiB were meant (the
    /// coordinator's byte count overflowed and trapped).
    @Test func institutionNamesAndMemoryAreBounded() {
        let error = #expect(throws: SpecError.self) {
            try JobSpec.parse(yaml: Self.base + "cluster: {institutions: [\"pku,sjtu\", \"\"], resources: {memory-gib: 17179869184}}")
        }
        let text = error?.description ?? ""
        #expect(text.contains("cluster.institutions[0]: must be an institution name"), "\(text)")
        #expect(text.contains("cluster.institutions[1]: must be an institution name"), "\(text)")
        #expect(text.contains("cluster.resources.memory-gib: must be a number of GiB from 0 to 1048576"), "\(text)")
    }

    @Test func defaultsAreOneWorkerAnywhere() throws {
        let spec = try JobSpec.parse(yaml: Self.base)
        #expect(spec.cluster == JobSpec.Cluster())
        let two = try JobSpec.parse(yaml: Self.base + "cluster: {min-workers: 2}")
        #expect(two.cluster.maxWorkers == 2, "max-workers defaults to min-workers")
    }

    @Test func everyClusterProblemIsReportedAtOnce() {
        let error = #expect(throws: SpecError.self) {
            try JobSpec.parse(yaml: Self.base + """
                cluster:
                  min-workers: 3
                  max-workers: 2
                  resources: {cores: 0, memroy-gib: 1}
                  priority: 5000
                """)
        }
        let text = error?.description ?? ""
        #expect(text.contains("cluster.max-workers: must be at least cluster.min-workers (3), got 2"))
        #expect(text.contains("cluster.resources.cores"))
        #expect(text.contains("memroy-gib"))
        #expect(text.contains("cluster.priority"))
    }
}
