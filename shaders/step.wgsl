// Per-step values the CPU writes into one small uniform buffer before each
// submission (a library; the layout matches `StepInfo` in src/executor.rs).
struct StepInfo {
    // Training steps taken before this one: the noise counter.
    step: u32,
    // Offset of this batch in the epoch's shuffled order.
    batch_start: u32,
    // Where this step's losses go in the metrics ring.
    metrics_slot: u32,
    unused: u32,
}
