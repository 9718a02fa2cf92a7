// Register-tiled matrix multiply, the skeleton of every convolution and linear kernel:
//
//     C[g, m, n] = sum_k A(g, m, k) * B(g, k, n)        g < number of workgroups in z
//
// The operation's own file supplies, for an operation `op`, the operands and result:
//     op_a_row(g, m) -> row descriptor      op_a_at(row, k) -> AVec
//     op_b_col(g, n) -> column descriptor   op_b_at(col, k) -> BVec
//     op_store(g, m, n, value)
// and the constants GEMM_M, GEMM_N, GEMM_K. Descriptors hoist the index arithmetic
// that does not depend on k out of the inner loop. Loads outside the matrix must
// return 0; stores outside it are skipped by op_store.
//
// Operands are loaded as vectors of up to four floats (one load instead of four:
// loads dominate on software adapters). In the "dot" form both operands are vectors
// along k (channels, contiguous in NHWC) and each accumulator takes a dot product per
// load; in the "outer" form A is a vector along m and B along n, and each step adds
// an outer product. A workgroup owns TILE_ROWS rows and TILE_COLS columns; each lane
// owns its own rows and every column. In the subgroup variant lanes split the column
// loads and share them with subgroupBroadcast. The parts in braces are generated per
// variant by src/kernels/gemm.rs.

const LANES: u32 = {{LANES}}u;
const TILE_ROWS: u32 = {{TILE_ROWS}}u;
const TILE_COLS: u32 = {{TILE_COLS}}u;
const K_STEP: u32 = {{K_STEP}}u;
const BLOCKS_M: u32 = (GEMM_M + TILE_ROWS - 1u) / TILE_ROWS;
const BLOCKS_N: u32 = (GEMM_N + TILE_COLS - 1u) / TILE_COLS;

@compute @workgroup_size({{LANES}})
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    {{LANE_BUILTIN}}
) {
    // Large grids are split over x and y (65535 workgroups per dimension at most).
    let block = workgroup.x + workgroup.y * workgroups.x;
    if block >= BLOCKS_M * BLOCKS_N {
        return;
    }
    let g = workgroup.z;
    let m0 = (block / BLOCKS_N) * TILE_ROWS;
    let n0 = (block % BLOCKS_N) * TILE_COLS;
{{SETUP}}
    for (var k = 0u; k < GEMM_K; k += K_STEP) {
{{INNER}}
    }
{{STORES}}
}
