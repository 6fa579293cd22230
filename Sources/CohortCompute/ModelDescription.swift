/// A model as a job spec describes it: plain values, no tensors. `cohort train`, the workers and
/// the coordinator all build the same model (and the same flat parameter layout) from it.
public enum ModelDescription: Sendable, Hashable, Codable {
    /// A multilayer perceptron classifier: inputs → hidden[0] → … → classes.
    case mlp(MLP)
    /// A GPT-style decoder-only character language model.
    case transformer(Transformer)

    public struct MLP: Sendable, Hashable, Codable {
        public var inputs: Int
        public var hidden: [Int]
        public var classes: Int
        public var activation: Activation
        public init(inputs: Int, hidden: [Int], classes: Int, activation: Activation = .relu) {
            self.inputs = inputs
            self.hidden = hidden
            self.classes = classes
            self.activation = activation
        }
    }

    public struct Transformer: Sendable, Hashable, Codable {
        public var vocabulary: Int
        public var context: Int
        public var width: Int
        public var layers: Int
        public var heads: Int
        public var dropout: Float
        public init(vocabulary: Int, context: Int, width: Int, layers: Int, heads: Int, dropout: Float = 0) {
            self.vocabulary = vocabulary
            self.context = context
            self.width = width
            self.layers = layers
            self.heads = heads
            self.dropout = dropout
        }
    }

    public enum Activation: String, Sendable, Hashable, Codable, CaseIterable {
        case relu, gelu, tanh
    }
}
