// ApusKVCache: how much memory the KV cache gets when the operator does not say.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The default KV-cache memory budget: a quarter of the memory this process may use, at most 4 GiB.
///
/// A quarter leaves room for the weights (memory-mapped, often larger than the cache), the
/// forward-pass scratch and the page cache; the 4 GiB cap keeps a big host from reserving memory
/// that a CPU server's throughput could never use (4 GiB is ~30k tokens of an 8B Llama with GQA in
/// f32, ~87k tokens of a 1B one). "May use" is the smaller of physical memory and the container's
/// cgroup limit, because in Docker the host's RAM is not what the process gets.
public enum KVMemoryBudget {
    /// The fraction of usable memory the default budget takes.
    public static let defaultFraction = 0.25
    /// The default budget's ceiling, 4 GiB.
    public static let defaultCap = 4 << 30
    /// The usable memory assumed when the machine's cannot be read, 4 GiB (so the default is 1 GiB).
    public static let fallbackMemory = 4 << 30

    /// `min(defaultFraction × memory, defaultCap)` for a process that may use `memory` bytes.
    public static func `default`(memory: Int) -> Int {
        min(Int(Double(max(memory, 0)) * defaultFraction), defaultCap)
    }

    /// The default budget for this machine (see ``usableMemory()``).
    public static func `default`() -> Int {
        `default`(memory: usableMemory() ?? fallbackMemory)
    }

    /// The smaller of physical memory and the cgroup (v2 or v1) memory limit, if either is known.
    public static func usableMemory() -> Int? {
        let limits = [physicalMemory(), cgroupMemoryLimit()].compactMap { $0 }
        return limits.min()
    }

    /// Physical memory from `sysconf`.
    public static func physicalMemory() -> Int? {
        #if os(Linux)
        let pages = sysconf(Int32(_SC_PHYS_PAGES))
        let pageSize = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, pageSize > 0 else { return nil }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: pageSize)
        return overflow ? nil : bytes
        #else
        return nil
        #endif
    }

    /// The container's memory limit: cgroup v2 `memory.max`, else v1 `memory.limit_in_bytes`;
    /// nil when unlimited ("max", or v1's huge sentinel) or unreadable.
    public static func cgroupMemoryLimit() -> Int? {
        for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            guard let text = firstLine(of: path) else { continue }
            guard let value = Int(text), value > 0, value < (1 << 60) else { return nil }
            return value
        }
        return nil
    }

    private static func firstLine(of path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        let line = String(decoding: bytes, as: UTF8.self)
        return String(line.filter { !$0.isWhitespace })
    }
}
