import Testing
@testable import CohortTransport

struct ConnectionTallyTests {
    @Test func garbageIsAcceptedThenDisconnectedWithoutAHandshake() {
        var t = ConnectionTally()
        t.record(.accepted(peer: "p", fd: 10))
        t.record(.disconnected(peer: "p", fd: 10))
        #expect(t.dropped == 1 && t.established == 0)
    }

    @Test func aGoodConnectionThatLaterClosesIsNotDropped() {
        var t = ConnectionTally()
        t.record(.accepted(peer: "p", fd: 10))
        t.record(.handshakeSucceeded(peer: "p"))
        t.record(.disconnected(peer: "p", fd: 10))
        #expect(t.dropped == 0 && t.established == 1)
    }

    @Test func aReportedFailureIsCountedOnceNotAgainAtItsDisconnect() {
        var t = ConnectionTally()
        t.record(.accepted(peer: "p", fd: 10))
        t.record(.handshakeFailedAuth(peer: "p", code: 400))
        t.record(.disconnected(peer: "p", fd: 10))
        #expect(t.dropped == 1)
    }

    @Test func totalsAreExactWhenConnectionsInterleave() {
        var t = ConnectionTally()
        t.record(.accepted(peer: "p", fd: 10)) // garbage
        t.record(.accepted(peer: "p", fd: 11)) // good
        t.record(.handshakeSucceeded(peer: "p")) // attributed to 10 first
        t.record(.disconnected(peer: "p", fd: 10))
        t.record(.disconnected(peer: "p", fd: 11))
        #expect(t.dropped == 1 && t.established == 1)
    }
}
