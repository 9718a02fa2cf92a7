// Pointwise activations, forward and backward (a library: other kernels call these).
// Each backward takes the forward *input* x and the incoming gradient dy, as PyTorch
// does for ReLU (gradient 0 at x = 0) and LeakyReLU (x > 0 ? dy : dy * slope).

fn identity_forward(x: f32) -> f32 {
    return x;
}

fn identity_backward(x: f32, dy: f32) -> f32 {
    return dy;
}

fn relu_forward(x: f32) -> f32 {
    return max(x, 0.0);
}

fn relu_backward(x: f32, dy: f32) -> f32 {
    return select(0.0, dy, x > 0.0);
}

fn leaky_relu_forward(x: f32, slope: f32) -> f32 {
    return select(x * slope, x, x > 0.0);
}

fn leaky_relu_backward(x: f32, slope: f32, dy: f32) -> f32 {
    return select(dy * slope, dy, x > 0.0);
}

fn tanh_forward(x: f32) -> f32 {
    return tanh(x);
}

fn tanh_backward(x: f32, dy: f32) -> f32 {
    let y = tanh(x);
    return dy * (1.0 - y * y);
}

// 1 / (1 + e^-x), as e^x / (1 + e^x) for negative x so that neither form overflows
// and small outputs keep their precision.
fn sigmoid_forward(x: f32) -> f32 {
    let e = exp(-abs(x));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, x >= 0.0);
}

fn sigmoid_backward(x: f32, dy: f32) -> f32 {
    let y = sigmoid_forward(x);
    return dy * y * (1.0 - y);
}

// Derivatives from the forward output y, for layers whose input is not kept.
fn tanh_backward_from_output(y: f32, dy: f32) -> f32 {
    return dy * (1.0 - y * y);
}

fn sigmoid_backward_from_output(y: f32, dy: f32) -> f32 {
    return dy * (1.0 - y) * y;
}
