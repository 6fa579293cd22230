import CohortCompute

/// The job spec: one YAML file (kebab-case keys) that `cohort train` reads and, later,
/// `cohort submit` (docs/job-spec.md lists every field).
public struct JobSpec: Sendable, Hashable {
    public var model: ModelDescription
    public init(model: ModelDescription) { self.model = model }
}
