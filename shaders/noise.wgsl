// Standard-normal noise from a counter-based generator: Philox4x32-10 keyed by the
// run's seed, counting (index, step), then Box-Muller. Any element of any step can be
// regenerated on its own, so the noise is the same whatever the adapter or dispatch
// order. Constants (generated): COUNT, SEED_LO, SEED_HI.

@group(0) @binding(0) var<storage, read_write> noise: array<f32>;
@group(0) @binding(1) var<uniform> step: StepInfo;

// High 32 bits of a 32 x 32 bit product, from 16-bit halves (WGSL has no u64).
fn mul_hi(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let cross = ((a_lo * b_lo) >> 16u) + ((a_hi * b_lo) & 0xffffu) + a_lo * b_hi;
    return a_hi * b_hi + ((a_hi * b_lo) >> 16u) + (cross >> 16u);
}

fn philox(counter: vec4<u32>, seed: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var key = seed;
    for (var round = 0u; round < 10u; round++) {
        let hi0 = mul_hi(0xd2511f53u, c.x);
        let lo0 = 0xd2511f53u * c.x;
        let hi1 = mul_hi(0xcd9e8d57u, c.z);
        let lo1 = 0xcd9e8d57u * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ key.x, lo1, hi0 ^ c.w ^ key.y, lo0);
        key += vec2<u32>(0x9e3779b9u, 0xbb67ae85u);
    }
    return c;
}

// A uniform in (0, 1]: 24 random bits, never 0 so the logarithm is finite.
fn unit(bits: u32) -> f32 {
    return f32((bits >> 8u) + 1u) * (1.0 / 16777216.0);
}

fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let radius = sqrt(-2.0 * log(unit(a)));
    let angle = 6.2831853071795864 * unit(b);
    return radius * vec2<f32>(cos(angle), sin(angle));
}

@compute @workgroup_size(64)
fn normal(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let quad = (workgroup.x + workgroup.y * workgroups.x) * 64u + lane;
    if quad * 4u >= COUNT {
        return;
    }
    let bits = philox(vec4<u32>(quad, step.step, 0u, 0u), vec2<u32>(SEED_LO, SEED_HI));
    let first = box_muller(bits.x, bits.y);
    let second = box_muller(bits.z, bits.w);
    let values = array<f32, 4>(first.x, first.y, second.x, second.y);
    for (var j = 0u; j < 4u; j++) {
        if quad * 4u + j < COUNT {
            noise[quad * 4u + j] = values[j];
        }
    }
}
