/// CSV files of numbers: one example per row, the label in the first or last column and the
/// features in the others, comma-separated, optional header row, gzip or plain.
enum CSVReader {
    static func parse(
        _ bytes: [UInt8], name: String, width: Int, classes: Int, scale: Float,
        labelColumn: DatasetManifest.LabelColumn, header: DatasetManifest.Header
    ) throws -> (features: [Float], labels: [Int32]) {
        var features: [Float] = []
        var labels: [Int32] = []
        var fields: [Substring] = []
        fields.reserveCapacity(width + 1)
        var lineNumber = 0
        var sawData = false
        // Lines are cut on bytes: as Characters, "\r\n" is one grapheme and never equals "\n".
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let lineBytes = rawLine.last == UInt8(ascii: "\r") ? rawLine.dropLast() : rawLine
            let line = Substring(String(decoding: lineBytes, as: UTF8.self))
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            fields.removeAll(keepingCapacity: true)
            for field in line.split(separator: ",", omittingEmptySubsequences: false) {
                fields.append(field.trimmingSpaces())
            }
            let labelField = labelColumn == .first ? fields[0] : fields[fields.count - 1]
            if !sawData {
                sawData = true
                let looksNumeric = Double(labelField) != nil
                switch header {
                case .present: continue
                case .auto where !looksNumeric: continue
                default: break
                }
            }
            guard fields.count == width + 1 else {
                throw DataError(name, "line \(lineNumber) has \(fields.count) fields, expected \(width + 1) (a label and \(width) features, from the manifest's `shape`)")
            }
            guard let labelValue = Double(labelField), labelValue == labelValue.rounded(), labelValue >= 0, labelValue < Double(classes) else {
                throw DataError(name, "line \(lineNumber): label `\(labelField)` is not an integer in 0..<\(classes) (the manifest's `classes`)")
            }
            labels.append(Int32(labelValue))
            let range = labelColumn == .first ? 1..<fields.count : 0..<(fields.count - 1)
            for (column, field) in zip(range, fields[range]) {
                guard let value = Float(field), value.isFinite else {
                    throw DataError(name, "line \(lineNumber), column \(column + 1): `\(field)` is not a finite number")
                }
                features.append(value * scale)
            }
        }
        if labels.isEmpty { throw DataError(name, "holds no data rows; the file is empty or only a header") }
        return (features, labels)
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return s
    }
}
