// Deterministic workgroup reductions (a library): every lane contributes one partial
// sum, and a fixed binary tree adds them, so the same inputs give the same bits on
// every run. No float atomics. Needs the constant REDUCE_LANES (the workgroup size, a
// power of two); the barriers sit in uniform control flow.

var<workgroup> partial_sums: array<f32, REDUCE_LANES>;

fn workgroup_sum(lane: u32, value: f32) -> f32 {
    partial_sums[lane] = value;
    workgroupBarrier();
    for (var width = REDUCE_LANES / 2u; width > 0u; width /= 2u) {
        if lane < width {
            partial_sums[lane] += partial_sums[lane + width];
        }
        workgroupBarrier();
    }
    let total = partial_sums[0];
    // Every lane has read the total before the array is reused.
    workgroupBarrier();
    return total;
}
