import Yams

extension JobSpec {
    /// Where and on how many workers a submitted job runs (`cohort submit`; `cohort train`
    /// ignores it).
    public struct Cluster: Sendable, Hashable {
        /// The job runs only with at least this many workers; below it, it waits.
        public var minWorkers: Int = 1
        /// It takes at most this many idle workers. Default: `minWorkers`.
        public var maxWorkers: Int = 1
        /// Institutions whose workers may run it; empty: any.
        public var institutions: [String] = []
        /// Per worker: at least this many cores and this much memory.
        public var minCores: Int = 1
        public var minMemoryGiB: Double = 0
        /// Higher runs first; FIFO within a priority.
        public var priority: Int = 0
        public init() {}
    }

    static func readCluster(_ node: Node, _ f: YAMLFields) -> Cluster {
        var c = Cluster()
        guard let map = f.mapping(node, path: "cluster",
                                  known: ["min-workers", "max-workers", "institutions", "resources", "priority"]) else { return c }
        func present(_ key: String) -> Node? {
            guard let n = map[key], !YAMLFields.isNull(n) else { return nil }
            return n
        }
        var maxGiven = false
        if let n = present("min-workers"), let v = f.integer(n, "cluster.min-workers", minimum: 1, expected: "a positive integer") {
            c.minWorkers = v
        }
        if let n = present("max-workers"), let v = f.integer(n, "cluster.max-workers", minimum: 1, expected: "a positive integer") {
            c.maxWorkers = v
            maxGiven = true
            if v < c.minWorkers { f.report("cluster.max-workers", n, "must be at least cluster.min-workers (\(c.minWorkers)), got \(v)") }
        }
        if !maxGiven { c.maxWorkers = c.minWorkers }
        if let n = present("institutions"),
           let items = f.sequence(n, "cluster.institutions", expected: "a list of institution names, e.g. [pku, sjtu]") {
            c.institutions = items.enumerated().compactMap { i, item in
                guard let name = f.string(item, "cluster.institutions[\(i)]") else { return nil }
                // Stored as one comma-joined column, and shown in terminals.
                if name.isEmpty || name.contains(",") || name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                    f.report("cluster.institutions[\(i)]", item, "must be an institution name (not empty, no commas or control characters), got \(name.debugDescription)")
                    return nil
                }
                return name
            }
        }
        if let n = present("resources"), let r = f.mapping(n, path: "cluster.resources", known: ["cores", "memory-gib"]) {
            if let m = r["cores"], !YAMLFields.isNull(m),
               let v = f.integer(m, "cluster.resources.cores", minimum: 1, expected: "a positive integer") { c.minCores = v }
            if let m = r["memory-gib"], !YAMLFields.isNull(m),
               let v = f.number(m, "cluster.resources.memory-gib", expected: "a number of GiB from 0 to 1048576", where: { $0 >= 0 && $0 <= 1_048_576 }) {
                c.minMemoryGiB = v
            }
        }
        if let n = present("priority"), let v = f.integer(n, "cluster.priority", minimum: -1000, expected: "an integer from -1000 to 1000") {
            if v > 1000 { f.report("cluster.priority", n, "must be an integer from -1000 to 1000, got \(v)") }
            c.priority = v
        }
        return c
    }
}
