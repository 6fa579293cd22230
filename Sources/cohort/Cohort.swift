import ArgumentParser

@main
struct Cohort: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cohort",
        abstract: "Train one model across several institutions' machines.")
}
