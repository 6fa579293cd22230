import Testing
@testable import CohortWire

struct AddressTests {
    @Test(arguments: [
        ("coord.example.org", "coord.example.org", 7600),
        ("coord.example.org:9000", "coord.example.org", 9000),
        ("127.0.0.1:7700", "127.0.0.1", 7700),
        ("tcp://10.1.2.3", "10.1.2.3", 7600),
        ("[::1]:7800", "::1", 7800),
        ("  host-1  ", "host-1", 7600),
    ])
    func parsesHostAndPort(_ text: String, _ host: String, _ port: Int) throws {
        let address = try CoordinatorAddress(parsing: text)
        #expect(address.host == host)
        #expect(address.port == port)
    }

    @Test func endpointsFollowTheConvention() throws {
        let e = try CoordinatorAddress(parsing: "hub:7600").endpoints
        #expect(e == Endpoints(api: "tcp://hub:7600", control: "tcp://hub:7601", data: "tcp://hub:7602"))
        let v6 = try CoordinatorAddress(parsing: "[::1]:8000").endpoints
        #expect(v6.data == "tcp://[::1]:8002")
    }

    @Test(arguments: ["", "host:", "host:0", "host:65535", "host:abc", "::1", "[::1", "[::1]x", "ho st", ":7600"])
    func rejectsBadAddresses(_ text: String) {
        let error = #expect(throws: AddressError.self) { try CoordinatorAddress(parsing: text) }
        #expect(error?.description.hasPrefix("coordinator address") == true)
    }
}
