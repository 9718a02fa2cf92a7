// Standalone pointwise kernels for activations that no neighbouring kernel fuses:
//   forward               output = act(input)
//   backward              output = act'(input) * grad        (input: the forward input)
//   backward_from_output  output = act'(y) * grad            (input: the forward output;
//                         for Tanh and Sigmoid, whose derivative is a function of y)
// Constants (generated): COUNT, and the glue act_forward(x), act_backward(x, dy),
// act_backward_from_output(y, dy).

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

fn element_index(workgroup: vec3<u32>, workgroups: vec3<u32>, lane: u32) -> u32 {
    return (workgroup.x + workgroup.y * workgroups.x) * 256u + lane;
}

@compute @workgroup_size(256)
fn forward(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element_index(workgroup, workgroups, lane);
    if i < COUNT {
        output[i] = act_forward(input[i]);
    }
}

@compute @workgroup_size(256)
fn backward(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element_index(workgroup, workgroups, lane);
    if i < COUNT {
        output[i] = act_backward(input[i], grad[i]);
    }
}

@compute @workgroup_size(256)
fn backward_from_output(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element_index(workgroup, workgroups, lane);
    if i < COUNT {
        output[i] = act_backward_from_output(input[i], grad[i]);
    }
}
