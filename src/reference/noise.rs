//! Standard-normal noise, bit-compatible in its integer part with `shaders/noise.wgsl`:
//! Philox4x32-10 keyed by the seed, counting (quad index, step), then Box-Muller on
//! 24-bit uniforms in (0, 1]. The GPU evaluates log, sqrt and cos/sin in f32; this
//! reference in f64, so the two agree to a few f32 ulps.

const MULTIPLIERS: [u32; 2] = [0xd251_1f53, 0xcd9e_8d57];
const KEY_STEP: [u32; 2] = [0x9e37_79b9, 0xbb67_ae85];

/// Philox4x32 with 10 rounds.
pub fn philox(counter: [u32; 4], seed: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut key = seed;
    for _ in 0..10 {
        let p0 = u64::from(MULTIPLIERS[0]) * u64::from(c[0]);
        let p1 = u64::from(MULTIPLIERS[1]) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ key[0], lo1, hi0 ^ c[3] ^ key[1], lo0];
        key = [
            key[0].wrapping_add(KEY_STEP[0]),
            key[1].wrapping_add(KEY_STEP[1]),
        ];
    }
    c
}

fn unit(bits: u32) -> f64 {
    f64::from((bits >> 8) + 1) / 16_777_216.0
}

fn box_muller(a: u32, b: u32) -> [f32; 2] {
    let radius = (-2.0 * unit(a).ln()).sqrt();
    let angle = std::f64::consts::TAU * unit(b);
    [(radius * angle.cos()) as f32, (radius * angle.sin()) as f32]
}

/// The `count` values the noise kernel draws at `step` for `seed`.
pub fn normal(count: usize, seed: u64, step: u32) -> Vec<f32> {
    let key = [seed as u32, (seed >> 32) as u32];
    (0..count.div_ceil(4))
        .flat_map(|quad| {
            let bits = philox([quad as u32, step, 0, 0], key);
            let [a, b] = box_muller(bits[0], bits[1]);
            let [c, d] = box_muller(bits[2], bits[3]);
            [a, b, c, d]
        })
        .take(count)
        .collect()
}
