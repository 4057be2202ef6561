#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Read-only bytes that live as long as this object: either a whole file mapped with
/// `mmap(PROT_READ, MAP_PRIVATE)` or a private heap copy (for in-memory parsing).
///
/// `@unchecked Sendable`: the only stored state is a pointer and a length fixed at init. The
/// memory behind the pointer is never written after init (the mapping is `PROT_READ`; the heap
/// copy is filled once in `init` and never exposed mutably), so sharing it across threads is
/// safe. It is released in `deinit`, when no reference remains.
final class MappedFile: @unchecked Sendable {
    private enum Owner {
        case mapping
        case heap
        case empty
    }

    /// Start of the bytes; valid while `self` is alive.
    let bytes: UnsafeRawBufferPointer
    private let owner: Owner

    /// Maps the whole file at `path` read-only.
    init(path: String) throws(GGUFError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw GGUFError.cannotOpen(path: path, reason: MappedFile.errnoDescription())
        }
        defer { close(fd) }

        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw GGUFError.cannotOpen(path: path, reason: MappedFile.errnoDescription())
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw GGUFError.notARegularFile(path: path)
        }
        guard let size = Int(exactly: info.st_size), size >= 0 else {
            throw GGUFError.cannotOpen(path: path, reason: "invalid file size \(info.st_size)")
        }
        if size == 0 {
            // mmap of zero bytes fails with EINVAL; an empty file is simply zero bytes.
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            owner = .empty
            return
        }
        let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let address, address != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw GGUFError.cannotMap(path: path, reason: MappedFile.errnoDescription())
        }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
        owner = .mapping
    }

    /// Copies `source` into private page-aligned heap memory.
    init(copying source: UnsafeRawBufferPointer) {
        if source.isEmpty {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            owner = .empty
            return
        }
        let memory = UnsafeMutableRawPointer.allocate(byteCount: source.count, alignment: 4096)
        UnsafeMutableRawBufferPointer(start: memory, count: source.count).copyMemory(from: source)
        bytes = UnsafeRawBufferPointer(start: memory, count: source.count)
        owner = .heap
    }

    deinit {
        guard let address = bytes.baseAddress else { return }
        switch owner {
        case .mapping:
            munmap(UnsafeMutableRawPointer(mutating: address), bytes.count)
        case .heap:
            UnsafeMutableRawPointer(mutating: address).deallocate()
        case .empty:
            break
        }
    }

    private static func errnoDescription() -> String {
        let code = errno
        if let message = strerror(code) {
            return String(cString: message) + " (errno \(code))"
        }
        return "errno \(code)"
    }
}
