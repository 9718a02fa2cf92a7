// Linear (y = x W^T + b, weight [OUT_F, IN_F]), forward and backward, as operands
// for gemm.wgsl. Flatten needs no kernel: NCHW rows are already [batch, C*H*W].
//   forward      y[b,o]  = sum_i x[b,i] W[o,i]      (+ bias through the epilogue)
//   input_grad   dx[b,i] = sum_o dy[b,o] W[o,i]
//   weight_grad  dW[o,i] = sum_b dy[b,o] x[b,i]
// The bias gradient is a channel sum (bias.wgsl). The forward pass reads rows of x and
// W along k four floats at a time when IN_F allows (load_a / load_b); the gradients'
// operands run along k with a stride, one float at a time. Every pass loads through
// load_a / load_b, so the module validates whichever width its program uses.
// Constants (generated): BATCH, IN_F, OUT_F.

struct Row {
    index: u32,
    valid: bool,
}

fn row(m: u32) -> Row {
    return Row(m, m < GEMM_M);
}

fn forward_a_row(g: u32, m: u32) -> Row {
    return row(m);
}

fn forward_a_at(r: Row, k: u32) -> AVec {
    return select(A_ZERO, load_a(select(0u, r.index * IN_F + k, r.valid)), r.valid);
}

fn forward_b_col(g: u32, n: u32) -> Row {
    return Row(n, n < GEMM_N);
}

fn forward_b_at(c: Row, k: u32) -> BVec {
    return select(B_ZERO, load_b(select(0u, c.index * IN_F + k, c.valid)), c.valid);
}

fn forward_store(g: u32, m: u32, n: u32, value: f32) {
    if m < GEMM_M && n < GEMM_N {
        let index = m * OUT_F + n;
        dst[index] = epilogue(n, index, value);
    }
}

fn input_grad_a_row(g: u32, m: u32) -> Row {
    return row(m);
}

fn input_grad_a_at(r: Row, k: u32) -> AVec {
    return select(A_ZERO, load_a(select(0u, r.index * OUT_F + k, r.valid)), r.valid);
}

fn input_grad_b_col(g: u32, n: u32) -> Row {
    return Row(n, n < GEMM_N);
}

fn input_grad_b_at(c: Row, k: u32) -> BVec {
    return select(B_ZERO, load_b(select(0u, k * IN_F + c.index, c.valid)), c.valid);
}

fn input_grad_store(g: u32, m: u32, n: u32, value: f32) {
    if m < GEMM_M && n < GEMM_N {
        let index = m * IN_F + n;
        dst[index] = epilogue(n, index, value);
    }
}

fn weight_grad_a_row(g: u32, m: u32) -> Row {
    return row(m);
}

fn weight_grad_a_at(r: Row, k: u32) -> AVec {
    return select(A_ZERO, load_a(select(0u, k * OUT_F + r.index, r.valid)), r.valid);
}

fn weight_grad_b_col(g: u32, n: u32) -> Row {
    return Row(n, n < GEMM_N);
}

fn weight_grad_b_at(c: Row, k: u32) -> BVec {
    return select(B_ZERO, load_b(select(0u, k * IN_F + c.index, c.valid)), c.valid);
}

fn weight_grad_store(g: u32, m: u32, n: u32, value: f32) {
    if m < GEMM_M && n < GEMM_N {
        let index = m * IN_F + n;
        dst[index] = epilogue(n, index, value);
    }
}
