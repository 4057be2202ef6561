// ApusKVCache: the one memory region every block lives in.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One anonymous, page-aligned mapping of `blockCount` blocks, laid out as ``KVCacheLayout``
/// says, unmapped on deinit.
///
/// Anonymous memory is zero-filled and committed on first touch, so a large budget costs resident
/// memory only as blocks are used (the free list hands recently freed, already touched blocks out
/// first). Pointer arithmetic is pure and lock-free; who may write which block is the manager's
/// business (a block is written only by the one sequence that holds it alone).
final class KVBlockStorage: @unchecked Sendable {
    let layout: KVCacheLayout
    let blockCount: Int
    let byteCount: Int
    private let base: UnsafeMutableRawPointer
    private let floats: UnsafeMutablePointer<Float>
    private let elementsPerBlock: Int
    private let elementsPerLayerSide: Int

    init(layout: KVCacheLayout, blockCount: Int) throws(KVCacheError) {
        precondition(blockCount > 0)
        self.layout = layout
        self.blockCount = blockCount
        let bytes = layout.bytesPerBlock * blockCount
        byteCount = bytes
        let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw .regionAllocationFailed(bytes: bytes, errno: errno)
        }
        #if os(Linux)
        // Attention walks every block of a sequence per layer; 2 MiB pages cut the TLB misses.
        // Advice only: failure (no THP support) changes nothing.
        _ = madvise(mapped, bytes, MADV_HUGEPAGE)
        #endif
        base = mapped
        switch layout.elementType {
        case .float32:
            floats = mapped.bindMemory(to: Float.self, capacity: bytes / MemoryLayout<Float>.stride)
        }
        elementsPerBlock = layout.elementsPerBlock
        elementsPerLayerSide = layout.elementsPerLayerSide
    }

    deinit { munmap(base, byteCount) }

    /// The first key of `layer` in `block`.
    @inline(__always)
    func keys(block: Int, layer: Int) -> UnsafeMutablePointer<Float> {
        floats + block * elementsPerBlock + 2 * layer * elementsPerLayerSide
    }

    /// The first value of `layer` in `block`.
    @inline(__always)
    func values(block: Int, layer: Int) -> UnsafeMutablePointer<Float> {
        floats + block * elementsPerBlock + (2 * layer + 1) * elementsPerLayerSide
    }

    /// The first byte of `block`.
    func bytes(block: Int) -> UnsafeMutableRawPointer {
        base + block * layout.bytesPerBlock
    }

    /// Copies every layer's K and V of `source` over `destination`.
    func copy(block source: Int, to destination: Int) {
        bytes(block: destination).copyMemory(from: bytes(block: source), byteCount: layout.bytesPerBlock)
    }
}
