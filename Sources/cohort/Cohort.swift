import ArgumentParser
import Logging

@main
struct Cohort: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cohort",
        abstract: "Train one model across several institutions' machines.",
        discussion: """
            One binary for every role: the coordinator daemon, the worker daemon, and the client \
            commands that researchers and operators use. See README.md and docs/.
            """,
        version: CohortVersion.string,
        subcommands: [Smoke.self, Keygen.self])

    static func main() {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

enum CohortVersion {
    static let string = "0.1.0"
}
