//! Every WGSL file parses and validates with naga, in every variant the Rust side
//! generates from it. Needs no adapter.

use dcgan_wgpu::kernels::{catalog, sources, validate};

#[test]
fn every_generated_kernel_validates() {
    let launches = catalog::every_kernel();
    let mut failures = Vec::new();
    for launch in &launches {
        if let Err(e) = validate(launch.label(), &launch.program.source) {
            failures.push(format!("{e:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_wgsl_file_is_part_of_a_validated_kernel() {
    let launches = catalog::every_kernel();
    for (name, text) in sources::ALL {
        let used = launches.iter().any(|l| l.program.source.contains(text));
        let gemm_skeleton = name == "gemm.wgsl"
            && launches
                .iter()
                .any(|l| l.program.source.contains("Register-tiled matrix multiply"));
        assert!(used || gemm_skeleton, "{name} is not covered by any kernel");
    }
}

#[test]
fn every_entry_point_exists_in_its_module() {
    for launch in catalog::every_kernel() {
        let module = validate(launch.label(), &launch.program.source).unwrap();
        assert!(
            module
                .entry_points
                .iter()
                .any(|e| e.name == launch.program.entry),
            "{}: no entry point {}",
            launch.label(),
            launch.program.entry
        );
    }
}
