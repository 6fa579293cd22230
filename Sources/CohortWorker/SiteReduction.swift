import CohortCompute
import CohortTransport
import CohortWire
import Synchronization

/// Who may connect to a delegate's site endpoint: the CURVE keys of its institution's members
/// in the current job, as the coordinator handed them over (nobody between jobs).
final class SiteAllowList: Authenticator {
    private let keys = Mutex<[String: String]>([:]) // Z85 public key → worker name

    func set(_ members: [String: String]) {
        keys.withLock { $0 = Dictionary(members.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a }) }
    }

    func authenticate(_ request: ZAPRequest) -> ZAPDecision {
        guard request.mechanism == "CURVE", let key = request.publicKey else { return .reject(reason: "CURVE only") }
        guard let name = keys.withLock({ $0[key.z85] }) else { return .reject(reason: "not a member of this site's job") }
        return .accept(userId: name)
    }
}

/// A delegate's sum of its site's contributions to one round: each member's shard k (fp32, over
/// the site's network) and the delegate's own, weighted by their samples. When all are in, the
/// weighted mean goes to the coordinator as one contribution of Σn samples, so one
/// contribution per institution crosses the WAN. At most a few rounds are open at once
/// (`overlap` keeps two).
final class SiteReducer {
    let parameterCount: Int
    let shardElements: Int
    let shardCount: Int
    /// The members' names and the delegate's own ("").
    let expected: Set<String>
    private var open: [Int: Round] = [:]
    private var spare: [FlatBuffer] = []

    final class Round {
        let sum: FlatBuffer
        var weight: [Double]
        var arrived: [Set<String>]
        var sent = 0
        init(sum: FlatBuffer, shards: Int) {
            self.sum = sum
            weight = Array(repeating: 0, count: shards)
            arrived = Array(repeating: [], count: shards)
        }
    }

    init(parameterCount: Int, shardElements: Int, members: Set<String>) {
        self.parameterCount = parameterCount
        self.shardElements = shardElements
        shardCount = (parameterCount + shardElements - 1) / shardElements
        expected = members.union([""])
    }

    func range(_ k: Int) -> Range<Int> { k * shardElements..<min((k + 1) * shardElements, parameterCount) }

    /// Adds `who`'s shard k of round `step`. Returns whether shard k is now complete, or why
    /// the contribution was refused.
    func add(step: Int, shard k: Int, from who: String, values: UnsafeRawBufferPointer, samples: Int) -> Result<Bool, SiteRefusal> {
        guard expected.contains(who) else { return .failure(SiteRefusal("\(who) is not a member of this site's job")) }
        guard k >= 0, k < shardCount, values.count == range(k).count * 4, let base = values.baseAddress else {
            return .failure(SiteRefusal("shard \(k) does not match the job's layout"))
        }
        guard samples > 0 else { return .failure(SiteRefusal("a contribution of 0 samples")) }
        // The site's contribution carries Σ samples in a u32 sample count.
        if let r = open[step], r.weight[k] + Double(samples) > Double(UInt32.max) {
            return .failure(SiteRefusal("\(samples) samples would take the site's round \(step) past 2^32 samples"))
        }
        let round: Round
        if let r = open[step] {
            round = r
        } else {
            guard open.count < 3 else { return .failure(SiteRefusal("round \(step) is too far ahead")) }
            let buffer = spare.popLast() ?? FlatBuffer(count: parameterCount)
            round = Round(sum: buffer, shards: shardCount)
            open[step] = round
        }
        guard !round.arrived[k].contains(who) else { return .failure(SiteRefusal("\(who) already sent shard \(k) of round \(step)")) }
        let r = range(k)
        let x = base.assumingMemoryBound(to: Float.self)
        // The coordinator's range rule: NaN, ±∞ and anything of 2^64 or more would overflow or
        // poison the weighted sum.
        for i in 0..<r.count where !ContributionRange.contains(x[i]) {
            return .failure(SiteRefusal(ContributionRange.problem(shard: k, index: i, value: x[i])))
        }
        let acc = round.sum.baseAddress + r.lowerBound
        let w = Float(samples)
        if round.arrived[k].isEmpty {
            for i in 0..<r.count { acc[i] = w * x[i] }
        } else {
            for i in 0..<r.count { acc[i] += w * x[i] }
        }
        round.arrived[k].insert(who)
        round.weight[k] += Double(samples)
        guard round.arrived[k] == expected else { return .success(false) }
        let scale = Float(1 / round.weight[k])
        for i in 0..<r.count { acc[i] *= scale }
        return .success(true)
    }

    /// Round `step`'s weighted mean (shard k is valid once complete) and shard k's samples.
    func mean(step: Int, shard k: Int) -> (flat: UnsafeMutablePointer<Float>, samples: Int)? {
        guard let round = open[step] else { return nil }
        return (round.sum.baseAddress, Int(round.weight[k]))
    }

    /// Shard k of round `step` went to the coordinator; the round closes after its last shard.
    func sent(step: Int) {
        guard let round = open[step] else { return }
        round.sent += 1
        if round.sent == shardCount {
            open[step] = nil
            spare.append(round.sum)
        }
    }

    /// Rounds before `step` will never complete (a member missed them): dropped.
    func drop(before step: Int) {
        for s in open.keys where s < step {
            spare.append(open[s]!.sum)
            open[s] = nil
        }
    }
}

struct SiteRefusal: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
