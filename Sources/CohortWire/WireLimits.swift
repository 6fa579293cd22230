/// Upper bounds that decoding enforces before it allocates or reads anything a peer declared.
/// The daemons configure them; the defaults suit a 1 MiB shard protocol with room to spare.
public struct WireLimits: Sendable, Hashable {
    /// Longest string field (method names, error texts), in bytes.
    public var maxStringBytes: Int
    /// Longest api request or reply body (JSON), in bytes.
    public var maxBodyBytes: Int
    /// Most elements in one shard.
    public var maxShardElements: Int
    /// Most shards in one flat buffer.
    public var maxShardCount: Int

    public init(maxStringBytes: Int = 4096,
                maxBodyBytes: Int = 16 << 20,
                maxShardElements: Int = 64 << 20,
                maxShardCount: Int = 1 << 20) {
        self.maxStringBytes = maxStringBytes
        self.maxBodyBytes = maxBodyBytes
        self.maxShardElements = maxShardElements
        self.maxShardCount = maxShardCount
    }

    public static let `default` = WireLimits()
}
