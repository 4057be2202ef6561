// ApusKVCache: what can go wrong.

/// Errors of the KV-cache manager. Every throwing operation leaves the manager unchanged.
public enum KVCacheError: Error, Equatable, CustomStringConvertible {
    /// A layout dimension is not positive, or a block is too large to address.
    case invalidLayout(String)
    /// The memory budget cannot hold a single block.
    case budgetTooSmall(budget: Int, bytesPerBlock: Int)
    /// The operating system refused the memory region.
    case regionAllocationFailed(bytes: Int, errno: Int32)
    /// Not enough blocks can be freed (free plus evictable cached blocks) for the operation.
    case outOfBlocks(needed: Int, available: Int)
    /// The sequence is not allocated (never was, or was released).
    case unknownSequence(SequenceID)
    /// A sequence with this id is already allocated.
    case sequenceExists(SequenceID)
    /// A prompt must have at least one token (the model needs a position to produce logits from).
    case emptyPrompt(SequenceID)
    /// A negative token count was asked for.
    case invalidCount(Int)
    /// More tokens were committed than were reserved (call `reserve` first and write their K/V).
    case commitExceedsReservation(SequenceID, committing: Int, reserved: Int)
    /// The sequence has reserved slots whose tokens are not committed yet, so it cannot be forked.
    case reservationPending(SequenceID, committed: Int, reserved: Int)

    public var description: String {
        switch self {
        case .invalidLayout(let why):
            "invalid KV-cache layout: \(why)"
        case .budgetTooSmall(let budget, let bytesPerBlock):
            "KV-cache memory budget of \(budget) bytes is smaller than one block (\(bytesPerBlock) bytes); "
                + "raise --kv-cache-memory"
        case .regionAllocationFailed(let bytes, let errno):
            "could not map \(bytes) bytes for the KV cache (errno \(errno)); lower --kv-cache-memory"
        case .outOfBlocks(let needed, let available):
            "KV cache is full: \(needed) blocks needed, \(available) can be freed"
        case .unknownSequence(let id):
            "\(id) has no KV blocks (not allocated, or already released)"
        case .sequenceExists(let id):
            "\(id) is already allocated in the KV cache"
        case .emptyPrompt(let id):
            "\(id): a prompt needs at least one token"
        case .invalidCount(let count):
            "token count must not be negative (got \(count))"
        case .commitExceedsReservation(let id, let committing, let reserved):
            "\(id): committing \(committing) tokens but only \(reserved) slots are reserved"
        case .reservationPending(let id, let committed, let reserved):
            "\(id) cannot be forked while \(reserved - committed) reserved tokens are uncommitted "
                + "(\(committed) committed, \(reserved) reserved)"
        }
    }
}
