import ApusFormats
import ApusKernels
import Foundation

/// The weights of a byte-level decoder (`Models/train/`), converted once at load to f32 in the
/// layout the kernels read.
///
/// The training script stores matrices as `[in, out]` (`x @ W`) in f16; the matmul kernels read
/// `rows = out` of `cols = in` contiguous elements, so each matrix is transposed into an owned f32
/// buffer (3.3 M parameters: 13 MB, made in a few milliseconds). Vectors are converted to f32.
final class ByteDecoderWeights: @unchecked Sendable {
    let configuration: ByteDecoderConfiguration
    private let file: SafetensorsFile
    /// Owned buffers, freed with the weights.
    private var buffers: [UnsafeMutablePointer<Float>] = []

    /// Reads `config.json` and opens `model.safetensors` in `directory`.
    init(directory: String) throws {
        let base = URL(fileURLWithPath: directory)
        let json: Data
        do {
            json = try Data(contentsOf: base.appendingPathComponent("config.json"))
        } catch {
            throw ModelLoadError.invalidConfiguration("cannot read \(base.appendingPathComponent("config.json").path): \(error.localizedDescription)")
        }
        configuration = try ByteDecoderConfiguration(json: json)
        file = try SafetensorsFile(path: base.appendingPathComponent("model.safetensors").path)
    }

    deinit {
        for buffer in buffers { buffer.deallocate() }
    }

    private func elements(_ name: String, shape: [Int]) throws -> [Float] {
        guard let info = file.infoIfPresent(named: name) else { throw ModelLoadError.missingTensor(name) }
        guard info.shape == shape else { throw ModelLoadError.badTensorShape(name: name, expected: shape, found: info.shape) }
        guard info.dtype.isReadableAsFloat else { throw ModelLoadError.unsupportedWeightType(name: name, type: info.dtype.rawValue) }
        return try file.floats(named: name)
    }

    private func owned(_ values: [Float]) -> UnsafeMutablePointer<Float> {
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(values.count, 1))
        buffer.initialize(from: values, count: values.count)
        buffers.append(buffer)
        return buffer
    }

    /// A `[inputs, outputs]` tensor as an f32 matrix of `outputs` rows of `inputs`.
    func matrix(_ name: String, inputs: Int, outputs: Int) throws -> WeightMatrix {
        let stored = try elements(name, shape: [inputs, outputs])
        var transposed = [Float](repeating: 0, count: stored.count)
        for i in 0..<inputs {
            for o in 0..<outputs { transposed[o * inputs + i] = stored[i * outputs + o] }
        }
        return WeightMatrix(format: .f32, rows: outputs, cols: inputs, data: UnsafeRawPointer(owned(transposed)))
    }

    /// A `[rows, columns]` tensor kept row-major (embeddings, per-head vectors, conv taps).
    func rows(_ name: String, rows: Int, columns: Int) throws -> UnsafePointer<Float> {
        UnsafePointer(owned(try elements(name, shape: [rows, columns])))
    }

    /// A vector of `count` elements.
    func vector(_ name: String, count: Int) throws -> UnsafePointer<Float> {
        UnsafePointer(owned(try elements(name, shape: [count])))
    }
}
