//! Datasets: IDX files (raw or gzip), lookup and download.

pub mod idx;

pub use idx::{Images, Labels, TrainingSet};
