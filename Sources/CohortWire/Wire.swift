/// CohortWire: message types and their codec. No I/O.
public enum Wire {
    public static let protocolVersion: UInt16 = 1
}
