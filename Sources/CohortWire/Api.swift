#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Api methods and their JSON bodies. Later issues add theirs here the same way.
public enum ApiMethod {
    /// Open to every caller: the coordinator's endpoints, protocol version and public key.
    public static let hello = "hello"
}

/// The body of the reply to `hello`.
public struct HelloReply: Sendable, Hashable, Codable {
    public var protocolVersion: Int
    public var endpoints: Endpoints
    /// The coordinator's CURVE public key (Z85), when CURVE is on.
    public var publicKey: String?
    public var software: String

    public init(protocolVersion: Int = Int(Envelope.version), endpoints: Endpoints, publicKey: String?, software: String) {
        self.protocolVersion = protocolVersion
        self.endpoints = endpoints
        self.publicKey = publicKey
        self.software = software
    }
}

/// The body of every non-ok `ApiReply`.
public struct ApiErrorBody: Sendable, Hashable, Codable {
    public var error: String
    public init(error: String) { self.error = error }
}

extension ApiRequest {
    /// A request whose body is `value` as JSON.
    public init(requestId: UInt64, method: String, json value: some Encodable) throws {
        self.init(requestId: requestId, method: method, body: Array(try JSONEncoder().encode(value)))
    }
}

extension ApiReply {
    /// A reply whose body is `value` as JSON.
    public init(requestId: UInt64, status: Status = .ok, json value: some Encodable) throws {
        self.init(requestId: requestId, status: status, body: Array(try JSONEncoder().encode(value)))
    }

    /// The body decoded as `T`; an error status surfaces as the error text it carries.
    public func decodeBody<T: Decodable>(as type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(body))
    }
}
