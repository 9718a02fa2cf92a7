//! Datasets: IDX files (raw or gzip), lookup and download.

mod dataset;
pub mod download;
pub mod idx;

pub use dataset::{Dataset, DownloadPolicy, IMAGE_SIDE, Source, load_training_set};
pub use idx::{Images, Labels, TrainingSet};
