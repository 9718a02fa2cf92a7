// Weight packing for conv.wgsl: PyTorch's [COARSE_C, FINE_C, KSIZE, KSIZE] into the
// layouts its gathers read with the channels they step over contiguous. Runs once per
// optimizer step. Constants (generated): FINE_C, COARSE_C, KSIZE.

@group(0) @binding(0) var<storage, read> canonical: array<f32>;
@group(0) @binding(1) var<storage, read_write> packed: array<f32>;

const WEIGHTS: u32 = COARSE_C * FINE_C * KSIZE * KSIZE;

fn canonical_index(cc: u32, cf: u32, tap: u32) -> u32 {
    return (cc * FINE_C + cf) * KSIZE * KSIZE + tap;
}

fn packed_element(workgroup: vec3<u32>, workgroups: vec3<u32>, lane: u32) -> u32 {
    return (workgroup.x + workgroup.y * workgroups.x) * 64u + lane;
}

// [COARSE_C, KSIZE, KSIZE, FINE_C], read by to_coarse.
@compute @workgroup_size(64)
fn pack_coarse_major(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = packed_element(workgroup, workgroups, lane);
    if i < WEIGHTS {
        let cf = i % FINE_C;
        let tap = (i / FINE_C) % (KSIZE * KSIZE);
        let cc = i / (FINE_C * KSIZE * KSIZE);
        packed[i] = canonical[canonical_index(cc, cf, tap)];
    }
}

// [FINE_C, KSIZE, KSIZE, COARSE_C], read by to_fine.
@compute @workgroup_size(64)
fn pack_fine_major(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = packed_element(workgroup, workgroups, lane);
    if i < WEIGHTS {
        let cc = i % COARSE_C;
        let tap = (i / COARSE_C) % (KSIZE * KSIZE);
        let cf = i / (COARSE_C * KSIZE * KSIZE);
        packed[i] = canonical[canonical_index(cc, cf, tap)];
    }
}
