import Testing
@testable import CohortCoordinator
import CohortWire

/// A member's metrics notice is taken only for an evaluation step the job has reached and with
/// counts an evaluation can give: summed, Int.max counts would trap the coordinator, and a step
/// no one else reports would sit in memory for good.
struct MetricsCheckTests {
    func metrics(step: Int = 20, correct: Int = 90, count: Int = 100, loss: Double = 12.5) -> TrainingNotice.Metrics {
        TrainingNotice.Metrics(job: 1, step: step, lossSum: loss, correct: correct, count: count)
    }

    func problem(_ m: TrainingNotice.Metrics) -> String? { m.problem(reached: 20, evaluates: { $0 % 10 == 0 }) }

    @Test func plausibleMetricsAreTakenAndAbsurdOnesRefused() {
        #expect(problem(metrics()) == nil)
        #expect(problem(metrics(step: 10)) == nil)
        #expect(problem(metrics(step: 15))?.contains("not an evaluation step") == true)
        #expect(problem(metrics(step: 30))?.contains("not an evaluation step of this job up to step 20") == true)
        #expect(problem(metrics(step: .max)) != nil)
        #expect(problem(metrics(step: -10)) != nil)
        #expect(problem(metrics(count: .max))?.contains("out of 9223372036854775807 examples") == true)
        #expect(problem(metrics(correct: 101)) != nil)
        #expect(problem(metrics(correct: -1)) != nil)
        #expect(problem(metrics(loss: .infinity)) != nil)
        #expect(problem(metrics(loss: -1)) != nil)
        var m = metrics()
        m.bytesSent = .max
        #expect(problem(m)?.contains("bytes sent") == true)
        m.bytesSent = 1 << 30
        m.evalSeconds = -.infinity
        #expect(problem(m)?.contains("evaluation time") == true)
        m.evalSeconds = 2.5
        #expect(problem(m) == nil)
    }
}
