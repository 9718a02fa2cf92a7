// A batch of real images, gathered from the u8 training set that stays on the GPU
// (four pixels per u32), in the order of this epoch's shuffle, and normalised to
// [-1, 1] through a 256-entry table the CPU fills with exactly what ToTensor +
// Normalize((0.5,), (0.5,)) compute, so every adapter gives PyTorch's bits.
// Constants (generated): IMAGE (pixels per image), COUNT (= batch * IMAGE).

@group(0) @binding(0) var<storage, read> pixels: array<u32>;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> images: array<f32>;
@group(0) @binding(4) var<uniform> step: StepInfo;

@compute @workgroup_size(256)
fn gather(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = (workgroup.x + workgroup.y * workgroups.x) * 256u + lane;
    if i >= COUNT {
        return;
    }
    let image = order[step.batch_start + i / IMAGE];
    let offset = image * IMAGE + i % IMAGE;
    let byte = (pixels[offset / 4u] >> ((offset % 4u) * 8u)) & 0xffu;
    images[i] = table[byte];
}
