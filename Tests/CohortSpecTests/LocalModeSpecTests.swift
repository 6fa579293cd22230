import Testing
@testable import CohortSpec

struct LocalModeSpecTests {
    static let base = """
        name: tiny
        model: {kind: mlp}
        data: {dataset: digits}

        """

    @Test func localModeFieldsAreReadWithDiLoCoDefaults() throws {
        let spec = try JobSpec.parse(yaml: Self.base + """
            training: {steps: 100, mode: local, local-steps: 20}
            eval-every: 40
            """)
        #expect(spec.training.mode == .local && spec.training.localSteps == 20)
        #expect(spec.training.outer == JobSpec.OuterOptimizer())
        #expect(spec.training.outer.kind == .nesterov && spec.training.outer.lr == 0.7 && spec.training.outer.momentum == 0.9)
        #expect(spec.stepsPerRound == 20)
        #expect(try JobSpec.parse(yaml: Self.base + "training: {steps: 10}").stepsPerRound == 1)
    }

    @Test func roundsMustTileTheRun() {
        let error = #expect(throws: SpecError.self) {
            try JobSpec.parse(yaml: Self.base + """
                training: {steps: 100, mode: local, local-steps: 30, outer-optimizer: {kind: nesterov, lr: -1}}
                eval-every: 25
                checkpoint-every: 45
                """)
        }
        let text = error?.description ?? ""
        #expect(text.contains("training.local-steps: must divide training.steps (100), got 30"))
        #expect(text.contains("training.outer-optimizer.lr"))
        #expect(text.contains("eval-every: must be a multiple of training.local-steps (30)"))
        #expect(text.contains("checkpoint-every: must be a multiple of training.local-steps (30)"))
    }

    @Test func localStepsWithoutLocalModeIsAnError() {
        #expect(throws: SpecError.self) { try JobSpec.parse(yaml: Self.base + "training: {steps: 10, local-steps: 5}") }
    }
}
