import ArgumentParser
import Foundation
import Logging

@main
struct Cohort: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cohort",
        abstract: "Train one model across several institutions' machines.",
        discussion: """
            One binary for every role: the coordinator daemon, the worker daemon, and the client \
            commands that researchers and operators use. See README.md and docs/.
            """,
        version: CohortVersion.string,
        subcommands: [Train.self, CoordinatorCommand.self, WorkerCommand.self, Submit.self, Jobs.self, Status.self, Watch.self, Cancel.self, Resume.self, Download.self, Workers.self,
                      Events.self, Enroll.self, Admin.self, Keygen.self, Smoke.self])

    static func main() async {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

enum CohortVersion {
    static let string = "0.1.0"
}

/// Writes a line to standard output at once (print() is block-buffered into a pipe or file,
/// so progress lines would arrive late).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
